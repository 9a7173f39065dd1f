//! BTF (placeholder until the parser lands).
use crate::linux::{Member, TypeInfo};
#[derive(Debug, thiserror::Error)]
#[error("BTF parser not built yet")]
pub struct BtfError;
pub struct Btf;
impl Btf {
    pub fn parse(_data: &[u8], _origin: impl Into<String>) -> Result<Btf, BtfError> {
        Err(BtfError)
    }
}
impl TypeInfo for Btf {
    fn member(&self, _ty: &str, _path: &str) -> Option<Member> {
        None
    }
    fn size_of(&self, _ty: &str) -> Option<u64> {
        None
    }
    fn source(&self) -> String {
        String::new()
    }
}
