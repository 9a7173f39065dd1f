// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * dmastub_test: a test artifact for dmastub's module support, not part of dmastub itself.
 *
 * Loaded in the test kit's guest, it makes /proc/dmastub_test; writing "panic" there calls
 * two noinline functions of this module, the inner one panicking, so that a backtrace
 * through module code can be checked against this file's line numbers. The license string
 * is "Dual MIT/GPL" (the kernel accepts it as GPL-compatible; dmastub is MIT OR Apache-2.0).
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>

static struct proc_dir_entry *dmastub_test_entry;

/* Kept out of line so that the backtrace shows each of them in this module. */
static noinline void dmastub_test_inner(const char *why)
{
	panic("dmastub_test: %s", why); /* DMASTUB_TEST_PANIC_LINE */
}

static noinline void dmastub_test_outer(const char *why)
{
	dmastub_test_inner(why); /* DMASTUB_TEST_OUTER_LINE */
	pr_info("dmastub_test: not reached\n");
}

static ssize_t dmastub_test_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	char word[16] = {};

	if (copy_from_user(word, buf, min(len, sizeof(word) - 1)))
		return -EFAULT;
	/* The word read, not a constant: the compiler keeps the functions' own names. */
	if (strncmp(word, "panic", 5) == 0)
		dmastub_test_outer(word);
	return len;
}

static const struct proc_ops dmastub_test_ops = {
	.proc_write = dmastub_test_write,
};

static int __init dmastub_test_init(void)
{
	dmastub_test_entry = proc_create("dmastub_test", 0200, NULL, &dmastub_test_ops);
	return dmastub_test_entry ? 0 : -ENOMEM;
}

static void __exit dmastub_test_exit(void)
{
	proc_remove(dmastub_test_entry);
}

module_init(dmastub_test_init);
module_exit(dmastub_test_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("dmastub test module: panics in its own code when poked");
