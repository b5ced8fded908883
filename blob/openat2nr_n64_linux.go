//go:build linux && (mips64 || mips64le)

package blob

// sysOpenat2 is openat2's system call number on 64-bit MIPS (n64).
const sysOpenat2 = 5437
