//! printk
