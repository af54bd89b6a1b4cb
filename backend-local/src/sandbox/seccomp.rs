//! The seccomp filter of the local sandbox, as the classic BPF program bubblewrap's
//! `--seccomp FD` loads: no user namespaces and no kernel keyrings for the job.
//!
//! `unshare` and `clone` with CLONE_NEWUSER fail with EPERM; `clone3`, whose flags live in
//! memory a filter cannot read, fails with ENOSYS so that libc falls back to `clone`;
//! `add_key`, `request_key` and `keyctl` fail with EPERM (a uid's keyring outlives the job, and
//! the next job of that uid would find it), as in Docker's default profile; a syscall of
//! another ABI (i386, x32) kills the process, so it cannot go around the filter.

/// A syscall's architecture-specific numbers and the audit arch the kernel reports.
struct Arch {
    audit: u32,
    clone: u32,
    unshare: u32,
    clone3: u32,
    /// x86_64 also accepts x32 syscalls, numbered from 0x40000000.
    x32: bool,
    keyrings: [u32; 3],
}

#[cfg(target_arch = "x86_64")]
const ARCH: Option<Arch> = Some(Arch {
    audit: 0xC000_003E,
    clone: 56,
    unshare: 272,
    clone3: 435,
    x32: true,
    keyrings: [248, 249, 250],
});

#[cfg(target_arch = "aarch64")]
const ARCH: Option<Arch> = Some(Arch {
    audit: 0xC000_00B7,
    clone: 220,
    unshare: 97,
    clone3: 435,
    x32: false,
    keyrings: [217, 218, 219],
});

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<Arch> = None;

const LD_ABS: u16 = 0x20;
const JEQ: u16 = 0x15;
const JGE: u16 = 0x35;
const JSET: u16 = 0x45;
const RET: u16 = 0x06;

const ALLOW: u32 = 0x7fff_0000;
const ERRNO: u32 = 0x0005_0000;
const KILL_PROCESS: u32 = 0x8000_0000;
const CLONE_NEWUSER: u32 = 0x1000_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const AUDIT_ARCH: u32 = 4;
const FIRST_ARG_LOW: u32 = 16;

/// Where a conditional jump goes: on to the next instruction, or to one of the endings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    Flags,
    Eperm,
    Enosys,
    Kill,
}

/// The filter for this architecture, or `None` where the sandbox has no filter.
pub(super) fn program() -> Option<Vec<u8>> {
    let arch = ARCH?;
    let mut code: Vec<(u16, u32, To, To)> = vec![
        (LD_ABS, AUDIT_ARCH, To::Next, To::Next),
        (JEQ, arch.audit, To::Next, To::Kill),
        (LD_ABS, NR, To::Next, To::Next),
    ];
    if arch.x32 {
        code.push((JGE, 0x4000_0000, To::Kill, To::Next));
    }
    code.push((JEQ, arch.clone3, To::Enosys, To::Next));
    code.push((JEQ, arch.unshare, To::Flags, To::Next));
    code.push((JEQ, arch.clone, To::Flags, To::Next));
    for keyring in arch.keyrings {
        code.push((JEQ, keyring, To::Eperm, To::Next));
    }
    code.push((RET, ALLOW, To::Next, To::Next));
    let flags = code.len();
    code.push((LD_ABS, FIRST_ARG_LOW, To::Next, To::Next));
    code.push((JSET, CLONE_NEWUSER, To::Eperm, To::Next));
    code.push((RET, ALLOW, To::Next, To::Next));
    let eperm = code.len();
    code.push((RET, ERRNO | EPERM, To::Next, To::Next));
    let enosys = code.len();
    code.push((RET, ERRNO | ENOSYS, To::Next, To::Next));
    let kill = code.len();
    code.push((RET, KILL_PROCESS, To::Next, To::Next));
    let offset = |pc: usize, to: To| -> u8 {
        let target = match to {
            To::Next => return 0,
            To::Flags => flags,
            To::Eperm => eperm,
            To::Enosys => enosys,
            To::Kill => kill,
        };
        // Every jump is forward and short: the whole program has fewer than 30 instructions.
        u8::try_from(target - pc - 1).unwrap_or(u8::MAX)
    };
    let mut bytes = Vec::with_capacity(code.len() * 8);
    for (pc, (op, k, jt, jf)) in code.iter().enumerate() {
        bytes.extend_from_slice(&op.to_ne_bytes());
        bytes.push(offset(pc, *jt));
        bytes.push(offset(pc, *jf));
        bytes.extend_from_slice(&k.to_ne_bytes());
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_ends_in_returns_and_jumps_stay_inside() {
        let bytes = program().expect("a filter for this architecture");
        assert_eq!(bytes.len() % 8, 0);
        let count = bytes.len() / 8;
        for (pc, instruction) in bytes.chunks(8).enumerate() {
            let op = u16::from_ne_bytes([instruction[0], instruction[1]]);
            let (jt, jf) = (usize::from(instruction[2]), usize::from(instruction[3]));
            if op == RET {
                continue;
            }
            assert!(
                pc + 1 + jt.max(jf) < count,
                "jump out of the program at {pc}"
            );
            assert!(pc + 1 < count, "the program does not end in a return");
        }
    }
}
