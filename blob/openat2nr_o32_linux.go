//go:build linux && (mips || mipsle)

package blob

// sysOpenat2 is openat2's system call number on 32-bit MIPS (o32).
const sysOpenat2 = 4437
