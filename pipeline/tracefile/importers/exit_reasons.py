"""Exit reasons of kvm_exit, normalised: one set of names across renderings, VMX and SVM.

kvm_exit prints its reason by name from the kernel's tables (`HLT`, `EPT_VIOLATION`;
SVM `hlt`, `npf`, `PF excp`), by name from trace-cmd's kvm plugin (VMX alike, SVM
`EXIT_HLT`, `EXIT_NPF`), or as a number beside the ISA (-R: `exit_reason=12 … isa=1`).
Canonical names: VMX as in the kernel's VMX_EXIT_REASONS; SVM as the SVM_EXIT_* macros
without prefix (`NPF`, `IOIO`, `VMMCALL`, `EXCP_PF`). Instruction exits both ISAs have
share a name (`HLT`, `CPUID`, `RDTSC`, …).
"""
from __future__ import annotations

ISA_VMX, ISA_SVM = 1, 2

# VMX basic exit reason (low 16 bits of exit_reason) -> name, as in VMX_EXIT_REASONS.
VMX = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL",
    4: "SIPI_SIGNAL", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH", 10: "CPUID",
    12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL",
    19: "VMCLEAR", 20: "VMLAUNCH", 21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD",
    24: "VMRESUME", 25: "VMWRITE", 26: "VMOFF", 27: "VMON", 28: "CR_ACCESS", 29: "DR_ACCESS",
    30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE", 33: "INVALID_STATE",
    34: "MSR_LOAD_FAIL", 36: "MWAIT_INSTRUCTION", 37: "MONITOR_TRAP_FLAG",
    39: "MONITOR_INSTRUCTION", 40: "PAUSE_INSTRUCTION", 41: "MCE_DURING_VMENTRY",
    43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS", 45: "EOI_INDUCED", 46: "GDTR_IDTR",
    47: "LDTR_TR", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG", 50: "INVEPT", 51: "RDTSCP",
    52: "PREEMPTION_TIMER", 53: "INVVPID", 54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE",
    57: "RDRAND", 58: "INVPCID", 59: "VMFUNC", 60: "ENCLS", 61: "RDSEED", 62: "PML_FULL",
    63: "XSAVES", 64: "XRSTORS", 67: "UMWAIT", 68: "TPAUSE", 74: "BUS_LOCK", 75: "NOTIFY",
}
# Older kernels and trace-cmd's plugin name reason 7 differently.
VMX_ALIASES = {"PENDING_INTERRUPT": "INTERRUPT_WINDOW"}
# Kernel print flags that may follow a VMX reason (`EPT_VIOLATION FAILED_VMENTRY`).
VMX_FLAGS = ("FAILED_VMENTRY", "SGX_ENCLAVE_MODE")

# SVM exit code -> (canonical name, the kernel's SVM_EXIT_REASONS string).
# trace-cmd's plugin prints "EXIT_" + canonical.
_EXCP = {0: "DE", 1: "DB", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM", 8: "DF", 10: "TS",
         11: "NP", 12: "SS", 13: "GP", 14: "PF", 16: "MF", 17: "AC", 18: "MC", 19: "XF"}
SVM: dict[int, tuple[str, str]] = {
    **{c: (f"READ_CR{c}", f"read_cr{c}") for c in (0, 2, 3, 4, 8)},
    **{0x10 + c: (f"WRITE_CR{c}", f"write_cr{c}") for c in (0, 2, 3, 4, 8)},
    **{0x20 + d: (f"READ_DR{d}", f"read_dr{d}") for d in range(8)},
    **{0x30 + d: (f"WRITE_DR{d}", f"write_dr{d}") for d in range(8)},
    **{0x40 + v: (f"EXCP_{n}", f"{n} excp") for v, n in _EXCP.items()},
    0x60: ("INTR", "interrupt"), 0x61: ("NMI", "nmi"), 0x62: ("SMI", "smi"),
    0x63: ("INIT", "init"), 0x64: ("VINTR", "vintr"), 0x65: ("CR0_SEL_WRITE", "cr0_sel_write"),
    0x66: ("IDTR_READ", "read_idtr"), 0x67: ("GDTR_READ", "read_gdtr"),
    0x68: ("LDTR_READ", "read_ldtr"), 0x69: ("TR_READ", "read_rt"),
    0x6a: ("IDTR_WRITE", "write_idtr"), 0x6b: ("GDTR_WRITE", "write_gdtr"),
    0x6c: ("LDTR_WRITE", "write_ldtr"), 0x6d: ("TR_WRITE", "write_rt"),
    0x6e: ("RDTSC", "rdtsc"), 0x6f: ("RDPMC", "rdpmc"), 0x70: ("PUSHF", "pushf"),
    0x71: ("POPF", "popf"), 0x72: ("CPUID", "cpuid"), 0x73: ("RSM", "rsm"),
    0x74: ("IRET", "iret"), 0x75: ("SWINT", "swint"), 0x76: ("INVD", "invd"),
    0x77: ("PAUSE", "pause"), 0x78: ("HLT", "hlt"), 0x79: ("INVLPG", "invlpg"),
    0x7a: ("INVLPGA", "invlpga"), 0x7b: ("IOIO", "io"), 0x7c: ("MSR", "msr"),
    0x7d: ("TASK_SWITCH", "task_switch"), 0x7e: ("FERR_FREEZE", "ferr_freeze"),
    0x7f: ("SHUTDOWN", "shutdown"), 0x80: ("VMRUN", "vmrun"), 0x81: ("VMMCALL", "hypercall"),
    0x82: ("VMLOAD", "vmload"), 0x83: ("VMSAVE", "vmsave"), 0x84: ("STGI", "stgi"),
    0x85: ("CLGI", "clgi"), 0x86: ("SKINIT", "skinit"), 0x87: ("RDTSCP", "rdtscp"),
    0x88: ("ICEBP", "icebp"), 0x89: ("WBINVD", "wbinvd"), 0x8a: ("MONITOR", "monitor"),
    0x8b: ("MWAIT", "mwait"), 0x8c: ("MWAIT_COND", "mwait_cond"), 0x8d: ("XSETBV", "xsetbv"),
    0x8e: ("RDPRU", "rdpru"), 0x8f: ("EFER_WRITE_TRAP", "write_efer_trap"),
    0x90: ("CR0_WRITE_TRAP", "write_cr0_trap"), 0x94: ("CR4_WRITE_TRAP", "write_cr4_trap"),
    0x98: ("CR8_WRITE_TRAP", "write_cr8_trap"), 0xa2: ("INVPCID", "invpcid"),
    0xa5: ("BUS_LOCK", "buslock"), 0xa6: ("IDLE_HLT", "idle-halt"), 0x400: ("NPF", "npf"),
    0x401: ("AVIC_INCOMPLETE_IPI", "avic_incomplete_ipi"),
    0x402: ("AVIC_UNACCELERATED_ACCESS", "avic_unaccelerated_access"),
    0x403: ("VMGEXIT", "vmgexit"), 0xFFFFFFFF: ("ERR", "invalid_guest_state"),
}


def _by_printed_name() -> dict[str, tuple[str, int]]:
    """Every printed name (kernel or plugin, VMX or SVM) -> (canonical, isa)."""
    names: dict[str, tuple[str, int]] = {n: (n, ISA_VMX) for n in VMX.values()}
    names.update({alias: (n, ISA_VMX) for alias, n in VMX_ALIASES.items()})
    for canonical, kernel in SVM.values():
        names[kernel] = (canonical, ISA_SVM)
        names[f"EXIT_{canonical}"] = (canonical, ISA_SVM)
    return names


BY_NAME = _by_printed_name()


def from_number(code: int, isa: int) -> str:
    """Canonical name of a numeric exit reason; unknown codes keep their number."""
    if isa == ISA_VMX:
        basic = code & 0xFFFF
        return VMX.get(basic, f"VMX_{basic}")
    if isa == ISA_SVM:
        code &= 0xFFFFFFFF   # EXIT_ERR is -1
        return SVM[code][0] if code in SVM else f"SVM_{code:#x}"
    return f"ISA{isa}_{code}"


def from_name(printed: str) -> str | None:
    """Canonical name of a printed reason, None if it is not one.

    Handles VMX flags after the name, the plugin's `UNKNOWN (n)` and the kernel's hex
    fallback for values missing from its table (then VMX is assumed: it has no ISA)."""
    words = [w for w in printed.split() if w not in VMX_FLAGS]
    text = " ".join(words)
    if text in BY_NAME:
        return BY_NAME[text][0]
    if text.startswith("UNKNOWN (") and text.endswith(")") and text[9:-1].isdigit():
        return from_number(int(text[9:-1]), ISA_VMX)
    if text.startswith("0x"):
        try:
            return from_number(int(text, 16), ISA_VMX)
        except ValueError:
            return None
    return None

