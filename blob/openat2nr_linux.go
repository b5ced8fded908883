//go:build linux && !mips && !mipsle && !mips64 && !mips64le

package blob

// sysOpenat2 is openat2's system call number (the same on every
// architecture that got it with the common table, Linux 5.6).
const sysOpenat2 = 437
