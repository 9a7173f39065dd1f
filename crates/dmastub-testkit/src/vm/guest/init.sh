#!/bin/busybox sh
# /init of the demo guest (busybox). It starts the ticker (and bin/dynticker when the test kit
# added it) and a few sleepers, reports what the guest knows about itself on the console, then
# serves the host's requests on the second serial port (ttyS1), one per line:
#   report   the report again (ps, kallsyms, the ticker)
#   panic    panic the kernel from a process named "crasher" (echo c > /proc/sysrq-trigger)
#   maps     every process's /proc/PID/maps, each after a "pid PID" line
#   maps PID one process's /proc/PID/maps
#   stat PID /proc/PID/stat and /proc/PID/status
#   modules  /proc/modules
#   poke-module  panic the kernel in the test module's own code (echo panic > /proc/dmastub_test)
# Answers are framed by "BEGIN <request>" and "END <request>" lines.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo 0 > /proc/sys/kernel/kptr_restrict
echo 0 > /proc/sys/kernel/dmesg_restrict
echo 1 > /proc/sys/kernel/sysrq
# An NMI from outside (QEMU's inject-nmi, a BMC's NMI button) panics the kernel, as on servers.
echo 1 > /proc/sys/kernel/unknown_nmi_panic
cd /

# Modules the test kit put in the initramfs, loaded in the order of lib/modules/load-order.
if [ -f /lib/modules/load-order ]; then
    while read -r m; do
        insmod "/lib/modules/$m.ko" > /dev/console 2>&1 || echo "INSMOD-FAILED $m" > /dev/console
    done < /lib/modules/load-order
fi

/bin/ticker > /dev/console 2>&1 &
TICKER=$!
# A dynamically linked program, when the test kit put one (and its libraries) in the initramfs.
if [ -x /bin/dynticker ]; then /bin/dynticker > /dev/console 2>&1 & fi
sleep 1000000 &
sleep 1000000 &
# The pid also goes to the kernel log: printk reaches the console before the panic does, while
# the tty's own output may still sit in the UART's buffer when the CPUs stop.
printf '#!/bin/busybox sh\necho "CRASHER pid=$$" > /dev/kmsg\necho "CRASHER pid=$$"\necho c > /proc/sysrq-trigger\n' > /bin/crasher
chmod 755 /bin/crasher
sleep 1

report() {
    echo "release $(uname -r)"
    echo "ticker $TICKER"
    grep -E ' (_text|_stext|init_task|linux_banner|swapper_pg_dir|init_top_pgt|panic)$' /proc/kallsyms \
        | sed 's/^/kallsyms /'
    ps -o pid,ppid,stat,comm | sed 's/^/ps /'
}

{ echo "BEGIN report"; report; echo "END report"; } > /dev/console
echo "DMASTUB-GUEST-READY" > /dev/console

# One open of the port for the whole loop: a tty drops what arrives while nobody has it open.
stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
while read -r request <&3; do
    case "$request" in
        report) { echo "BEGIN report"; report; echo "END report"; } >&3 ;;
        maps)
            {
                echo "BEGIN maps"
                for d in /proc/[0-9]*; do
                    echo "pid ${d#/proc/}"
                    cat "$d/maps" 2>/dev/null
                done
                echo "END maps"
            } >&3 ;;
        "maps "*) { echo "BEGIN $request"; cat "/proc/${request#maps }/maps" 2>&1; echo "END $request"; } >&3 ;;
        "stat "*)
            { echo "BEGIN $request"; cat "/proc/${request#stat }/stat" "/proc/${request#stat }/status" 2>&1
              echo "END $request"; } >&3 ;;
        modules) { echo "BEGIN modules"; cat /proc/modules; echo "END modules"; } >&3 ;;
        poke-module)
            { echo "BEGIN poke-module"; echo "END poke-module"; } >&3
            sh -c 'echo "POKER pid=$$" > /dev/kmsg; echo panic > /proc/dmastub_test' > /dev/console 2>&1 ;;
        panic) { echo "BEGIN panic"; echo "END panic"; } >&3; /bin/crasher > /dev/console 2>&1 ;;
        *) { echo "BEGIN $request"; echo "unknown request"; echo "END $request"; } >&3 ;;
    esac
done
