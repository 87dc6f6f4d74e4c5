"""Compiled (numba) scanning of text-trace chunks: the hot path of `pipeline import` (and, the
line prefixes only, of `kvm-stat`).

`pipeline.tracefile.textlines.parse_line` and the payload regexes of `formats.py` are the specification;
these functions compute the same results on bytes, one chunk of lines per call, at a few
hundred ns per line instead of tens of µs (Python's `re` backtracks through the lazy task
name of `PREFIX_RE` at every line). Whatever they are not sure of they hand back to the
Python path rather than guess:

* `scan_lines` parses the line prefix (`TASK-PID [CPU] FLAGS TS: EVENT: PAYLOAD`, every
  variant `PREFIX_RE`/`EVENT_RE`/`SYSCALL_RE` accept). A line holding a byte outside printable
  ASCII and tab (UTF-8 text, control characters) or a number too long for int64 is marked
  PYTHON and parsed by `parse_line`.
* `scan_payloads` extracts the fields of the payload patterns that occur by the million
  (sched_switch in both forms, tlb_flush, page faults, irq/vector numbers, syscall numbers, and
  in Dovetail/Xenomai guests cpu_idle's state and cobalt_tick_shot's delta).
  Its result is OK (fields found as the regex `search` would find them), FAIL (the regex
  cannot match: a literal it needs is absent) or PYTHON (an unusual payload: let the regex
  decide). Rare events (fork, exec) always go to Python.

The equivalence is tested line by line against `parse_line` and the regexes on every sample
file and on generated lines (tests/pipeline/test_linescan.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit

# scan_lines status per line
IGNORE, OTHER, EVENT, PYTHON = 0, 1, 2, 3       # IGNORE: '#', tab or blank; OTHER: not an event line
# scan_payloads codes (which payload pattern a line's event uses) and results
(P_NONE, P_SWITCH, P_SWITCH_COMPACT, P_PYTHON, P_TLB, P_FAULT, P_IRQ, P_VECTOR, P_SYS_NR, P_SYS_ENTER, P_STATE,
 P_DELTA) = range(12)
FAIL, OK = 0, 1                                 # and PYTHON (3), as above
NS_UNIT, COUNT_UNIT = 0, 1
MAX_DIGITS = 18                                 # decimal digits that always fit in int64
MAX_SECONDS = 9_223_372_035                     # sec.frac timestamps whose ns fit in int64
UNSURE = -2                                     # prefix parts: "let Python decide"

_SP, _TAB, _DASH, _SLASH, _COLON, _DOT = 32, 9, 45, 47, 58, 46
_LPAR, _RPAR, _LBR, _RBR, _EQ, _HASH = 40, 41, 91, 93, 61, 35


@njit(cache=True, inline="always")
def _ws(c: int) -> bool:
    return c == _SP or c == _TAB


@njit(cache=True, inline="always")
def _digit(c: int) -> bool:
    return 48 <= c <= 57


@njit(cache=True, inline="always")
def _alnum(c: int) -> bool:
    return _digit(c) or 65 <= c <= 90 or 97 <= c <= 122


@njit(cache=True)
def _digits_end(buf, i, e):
    while i < e and _digit(buf[i]):
        i += 1
    return i


@njit(cache=True)
def _ws_end(buf, i, e):
    while i < e and _ws(buf[i]):
        i += 1
    return i


@njit(cache=True)
def _int(buf, s, e):
    v = 0
    for k in range(s, e):
        v = v * 10 + (buf[k] - 48)
    return v


@njit(cache=True)
def _starts(buf, i, e, lit):
    if i + lit.size > e:
        return False
    for k in range(lit.size):
        if buf[i + k] != lit[k]:
            return False
    return True


@njit(cache=True)
def _find(buf, i, e, lit):
    """First position >= i where lit starts (whole literal before e), or -1."""
    while i + lit.size <= e:
        if _starts(buf, i, e, lit):
            return i
        i += 1
    return -1


@njit(cache=True)
def _ts(buf, i, e, out):
    """`\\d+(?:\\.\\d+)?:\\s+` at i: store ts/unit, return where the rest starts, or -1."""
    d = _digits_end(buf, i, e)
    if d == i:
        return -1
    if d - i > MAX_DIGITS:
        return UNSURE
    sec = _int(buf, i, d)
    j = d
    unit = COUNT_UNIT
    frac = 0
    if j < e and buf[j] == _DOT:
        f = _digits_end(buf, j + 1, e)
        if f == j + 1:
            return -1
        n = 0
        for k in range(j + 1, f):
            if n < 9:
                frac = frac * 10 + (buf[k] - 48)
                n += 1
        while n < 9:
            frac *= 10
            n += 1
        if sec > MAX_SECONDS:
            return UNSURE
        unit = NS_UNIT
        j = f
    if j >= e or buf[j] != _COLON or j + 1 >= e or not _ws(buf[j + 1]):
        return -1
    out[0] = sec * 1_000_000_000 + frac if unit == NS_UNIT else sec
    out[1] = unit
    return _ws_end(buf, j + 1, e)


@njit(cache=True)
def _flags_then_ts(buf, i, e, out):
    """`(?:[.a-zA-Z0-9]{4,5}\\s+)?` then the timestamp, trying 5, 4, then no flags."""
    for width in (5, 4):
        if i + width < e:
            good = True
            for k in range(i, i + width):
                c = buf[k]
                if not (_alnum(c) or c == _DOT):
                    good = False
                    break
            if good and _ws(buf[i + width]):
                r = _ts(buf, _ws_end(buf, i + width, e), e, out)
                if r != -1:
                    return r
    return _ts(buf, i, e, out)


@njit(cache=True)
def _tail(buf, p, e, out):
    """The part of PREFIX_RE after the task name, at separator position p.

    out: ts, unit, pid, tgid, cpu; returns where the rest starts, -1 (no match) or UNSURE."""
    i = p
    if buf[i] == _DASH:
        i += 1
    elif _ws(buf[i]):
        i = _ws_end(buf, i, e)
    else:
        return -1
    d = _digits_end(buf, i, e)
    if d == i:
        return -1
    if d - i > MAX_DIGITS:
        return UNSURE
    pid = _int(buf, i, d)
    tgid = -1
    i = d
    if i < e and buf[i] == _SLASH:          # perf's pid/tid: the thread runs, the pid is the tgid
        d = _digits_end(buf, i + 1, e)
        if d == i + 1:
            return -1
        if d - i - 1 > MAX_DIGITS:
            return UNSURE
        tgid = pid
        pid = _int(buf, i + 1, d)
        i = d
    if i >= e or not _ws(buf[i]):
        return -1
    i = _ws_end(buf, i, e)
    if i < e and buf[i] == _LPAR:           # atrace's TGID column `(  12)` / `(-----)`
        j = _ws_end(buf, i + 1, e)
        d = _digits_end(buf, j, e)
        if d > j:
            if d - j > MAX_DIGITS:
                return UNSURE
            tgid = _int(buf, j, d)
        else:
            d = j
            while d < e and buf[d] == _DASH:
                d += 1
            if d == j:
                return -1
        if d >= e or buf[d] != _RPAR or d + 1 >= e or not _ws(buf[d + 1]):
            return -1
        i = _ws_end(buf, d + 1, e)
    cpu = -1
    if i < e and buf[i] == _LBR:
        d = _digits_end(buf, i + 1, e)
        if d == i + 1 or d >= e or buf[d] != _RBR:
            return -1
        if d - i - 1 > MAX_DIGITS:
            return UNSURE
        cpu = _int(buf, i + 1, d)
        i = _ws_end(buf, d + 1, e)
    r = _flags_then_ts(buf, i, e, out)
    if r < 0:
        return r
    out[2] = pid
    out[3] = tgid
    out[4] = cpu
    return r


@njit(cache=True)
def _event(buf, r, e, spans):
    """EVENT_RE, else SYSCALL_RE, on the rest [r, e): spans = event start/end, payload start/end."""
    j = r
    if j < e and _digit(buf[j]):                   # perf's sample period `250000 cycles:`
        d = _digits_end(buf, j, e)
        if d < e and _ws(buf[d]):
            j = _ws_end(buf, d, e)
    if j < e and (buf[j] == 95 or _alnum(buf[j])):     # `9p_client_req:` starts with a digit
        k = j + 1
        while k < e:
            c = buf[k]
            if c == _COLON and (k + 1 == e or _ws(buf[k + 1])):
                spans[0], spans[1] = j, k
                spans[2] = _ws_end(buf, k + 1, e)
                spans[3] = e
                return True
            if not (_alnum(c) or c == 95 or c == _DOT or c == _COLON or c == _DASH):
                break
            k += 1
    # ftrace's syscall tracer: `sys_read(fd: 3, …)` / `sys_read -> 0x0`
    if r + 4 < e and buf[r] == 115 and buf[r + 1] == 121 and buf[r + 2] == 115 and buf[r + 3] == 95:
        k = r + 4
        while k < e and (_alnum(buf[k]) or buf[k] == 95):
            k += 1
        if k > r + 4 and k < e and (buf[k] == _LPAR or (k + 3 < e and buf[k] == _SP and buf[k + 1] == _DASH
                                                         and buf[k + 2] == 62 and buf[k + 3] == _SP)):
            spans[0], spans[1] = r, k
            spans[2] = _ws_end(buf, k, e)
            spans[3] = e
            return True
    return False


@njit(cache=True)
def _rstrip(buf, s, e):
    while e > s and _ws(buf[e - 1]):
        e -= 1
    return e


@njit(cache=True)
def _plain(buf, s, e):
    """Only printable ASCII and tabs: the bytes whose meaning the scanner knows."""
    for k in range(s, e):
        c = buf[k]
        if (c < 32 and c != _TAB) or c >= 127:
            return False
    return True


@njit(cache=True)
def scan_lines(buf, starts, ends, status, pid, tgid, cpu, ts, unit, spans, hashes):
    """Parse every line [starts[i], ends[i]) of buf (no newline) into the output arrays.

    spans[i] = comm start/end, event start/end, payload start/end (payload right-stripped);
    hashes[i] = FNV-1a of the event name bytes, to intern names without making strings."""
    out = np.zeros(5, np.int64)
    ev = np.zeros(4, np.int64)
    for n in range(starts.size):
        s, e = starts[n], ends[n]
        status[n] = OTHER
        if s == e or buf[s] == _HASH or buf[s] == _TAB:
            status[n] = IGNORE
            continue
        if not _plain(buf, s, e):
            status[n] = PYTHON
            continue
        w = _ws_end(buf, s, e)
        if w == e:                                # blank: HEADER_RE's `\s*`
            status[n] = IGNORE
            continue
        rest = -1
        p = w
        while p < e:                              # the lazy task name: first separator that fits
            c = buf[p]
            if c == _DASH or _ws(c):
                rest = _tail(buf, p, e, out)
                if rest != -1:
                    break
            p += 1
        if rest == -1 and w > s:                  # empty name: `\s*` gives back its last blank
            p = w - 1
            rest = _tail(buf, p, e, out)
        if rest == UNSURE:
            status[n] = PYTHON
            continue
        if rest < 0:
            continue
        if not _event(buf, rest, e, ev):
            continue
        status[n] = EVENT
        ts[n], unit[n], pid[n], tgid[n], cpu[n] = out[0], out[1], out[2], out[3], out[4]
        cs = w if p >= w else p
        spans[n, 0], spans[n, 1] = cs, _rstrip(buf, cs, p)
        spans[n, 2], spans[n, 3] = ev[0], ev[1]
        spans[n, 4], spans[n, 5] = ev[2], _rstrip(buf, ev[2], ev[3])
        h = np.uint64(14695981039346656037)
        for k in range(ev[0], ev[1]):
            h = (h ^ np.uint64(buf[k])) * np.uint64(1099511628211)
        hashes[n] = h


# ------------------------------------------------------------------ payloads
# The helpers below return OK (res filled), FAIL (the regex cannot match) or PYTHON (unsure:
# e.g. `int('012', 0)` raises in the Python path, a number too long for int64, a second `==> `).
_L_PREV_COMM = np.frombuffer(b"prev_comm=", np.uint8)
_L_PREV_PID = np.frombuffer(b" prev_pid=", np.uint8)
_L_NEXT_COMM = np.frombuffer(b"next_comm=", np.uint8)
_L_NEXT_PID = np.frombuffer(b" next_pid=", np.uint8)
_L_ARROW = np.frombuffer(b"==> ", np.uint8)
_L_REASON = np.frombuffer(b"reason", np.uint8)
_L_TASK_SWITCH = np.frombuffer(b"task switch", np.uint8)
_L_ADDRESS = np.frombuffer(b"address=", np.uint8)
_L_ERROR = np.frombuffer(b"error_code=", np.uint8)
_L_IRQ = np.frombuffer(b"irq=", np.uint8)
_L_VECTOR = np.frombuffer(b"vector=", np.uint8)
_L_NR = np.frombuffer(b"NR ", np.uint8)
_L_ID = np.frombuffer(b"id=", np.uint8)
_L_SYSCALL_NR = np.frombuffer(b"__syscall_nr", np.uint8)
_L_STATE = np.frombuffer(b"state=", np.uint8)
_L_DELTA = np.frombuffer(b"delta=", np.uint8)


@njit(cache=True, inline="always")
def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


@njit(cache=True)
def _decimal(buf, i, e, signed, res):
    """`-?\\d+` (or `\\d+`) at i, as int(x, 0) reads it: res = value, end."""
    neg = signed and i < e and buf[i] == _DASH
    j = i + 1 if neg else i
    d = _digits_end(buf, j, e)
    if d == j:
        return FAIL
    if d - j > MAX_DIGITS or (d - j > 1 and buf[j] == 48):
        return PYTHON
    v = _int(buf, j, d)
    res[0], res[1] = (-v if neg else v), d
    return OK


@njit(cache=True)
def _number(buf, i, e, res):
    """events._NUM, `0x[0-9a-fA-F]+|-?\\d+`, at i: res = value (the 64 bits), end."""
    if i + 2 < e and buf[i] == 48 and buf[i + 1] == 120 and _hexval(buf[i + 2]) >= 0:
        k = i + 2
        v = np.uint64(0)
        while k < e and _hexval(buf[k]) >= 0:
            if k - i - 2 >= 16:
                return PYTHON
            v = v * np.uint64(16) + np.uint64(_hexval(buf[k]))
            k += 1
        res[0], res[1] = np.int64(v), k
        return OK
    return _decimal(buf, i, e, True, res)


@njit(cache=True)
def _first_number(buf, s, e, lit, signed, hexa, res):
    """The first `lit` followed by a number (a regex `search`)."""
    i = _find(buf, s, e, lit)
    while i >= 0:
        j = i + lit.size
        r = _number(buf, j, e, res) if hexa else _decimal(buf, j, e, signed, res)
        if r != FAIL:
            return r
        i = _find(buf, i + 1, e, lit)
    return FAIL


@njit(cache=True)
def _switch(buf, s, e, res):
    """`prev_comm=(.*?) prev_pid=(\\d+) .*?next_comm=(.*?) next_pid=(\\d+)`: res = next_pid, _, comm span."""
    a = _find(buf, s, e, _L_PREV_COMM)
    if a < 0 or _find(buf, a, e, _L_NEXT_COMM) < 0:
        return FAIL
    b = _find(buf, a + _L_PREV_COMM.size, e, _L_PREV_PID)
    while b >= 0:
        r = _decimal(buf, b + _L_PREV_PID.size, e, False, res)
        if r == PYTHON:
            return PYTHON
        if r == OK and res[1] < e and buf[res[1]] == _SP:
            break
        b = _find(buf, b + 1, e, _L_PREV_PID)
    if b < 0:
        return PYTHON
    c = _find(buf, res[1] + 1, e, _L_NEXT_COMM)
    if c < 0:
        return PYTHON
    d = _find(buf, c + _L_NEXT_COMM.size, e, _L_NEXT_PID)
    while d >= 0:
        r = _decimal(buf, d + _L_NEXT_PID.size, e, False, res)
        if r == OK:
            res[2], res[3] = c + _L_NEXT_COMM.size, d
        if r != FAIL:
            return r
        d = _find(buf, d + 1, e, _L_NEXT_PID)
    return PYTHON


@njit(cache=True)
def _compact_part(buf, s, e, need_space, res):
    """The last `:(\\d+) \\[-?\\d+\\]` in [s, e) (the greedy `(.*)` name before it), followed by a
    blank inside [s, e) if need_space: res = pid, colon position."""
    found = FAIL
    for k in range(s, e):
        if buf[k] != _COLON:
            continue
        d = _digits_end(buf, k + 1, e)
        if d == k + 1 or d + 1 >= e or buf[d] != _SP or buf[d + 1] != _LBR:
            continue
        j = d + 2
        if j < e and buf[j] == _DASH:
            j += 1
        f = _digits_end(buf, j, e)
        if f == j or f >= e or buf[f] != _RBR or (need_space and not (f + 1 < e and buf[f + 1] == _SP)):
            continue
        found = _decimal(buf, k + 1, e, False, res)
        res[1] = k
    return found


@njit(cache=True)
def _switch_compact(buf, s, e, res):
    """trace-cmd's `^(prev):(pid) [prio] S ==> (next):(pid) [prio]`, when the line has one `==> `."""
    a = _find(buf, s, e, _L_ARROW)
    if a < 0:
        return FAIL
    if _find(buf, a + 1, e, _L_ARROW) >= 0:
        return PYTHON
    if _compact_part(buf, s, a, True, res) != OK:
        return PYTHON
    if _compact_part(buf, a + _L_ARROW.size, e, False, res) != OK:
        return PYTHON
    res[2], res[3] = a + _L_ARROW.size, res[1]
    return OK


@njit(cache=True)
def _tlb(buf, s, e, res):
    """`reason[:=](?P<reason>[^(]*?)\\s*(?:\\((?P<code>\\d+)\\))?$`: res[0] = 1 for a task-switch
    flush (code 0, reason "0", or a reason saying "task switch"), as GuestMapper counts it."""
    a = _find(buf, s, e, _L_REASON)
    while a >= 0 and not (a + 6 < e and (buf[a + 6] == _COLON or buf[a + 6] == _EQ)):
        a = _find(buf, a + 1, e, _L_REASON)
    if a < 0:
        return FAIL
    r = a + 7
    par = r
    while par < e and buf[par] != _LPAR:
        par += 1
    code = -1
    if par < e:
        if _decimal(buf, par + 1, e, False, res) != OK or res[1] != e - 1 or buf[e - 1] != _RPAR:
            return PYTHON
        code = res[0]
    rs = _ws_end(buf, r, par)
    re_ = _rstrip(buf, rs, par)
    zero = re_ - rs == 1 and buf[rs] == 48
    res[0] = 1 if (code == 0 or zero or _find(buf, rs, re_, _L_TASK_SWITCH) >= 0) else 0
    return OK


@njit(cache=True)
def _fault(buf, s, e, res):
    """`address=(NUM).*?error_code=(NUM)`: res = vpn (address >> 12, as unsigned), write flag."""
    a = _find(buf, s, e, _L_ADDRESS)
    if a < 0 or _find(buf, a, e, _L_ERROR) < 0:
        return FAIL
    if _number(buf, a + _L_ADDRESS.size, e, res) != OK:
        return PYTHON
    vpn = np.int64(np.uint64(res[0]) >> np.uint64(12))
    r = _first_number(buf, res[1], e, _L_ERROR, True, True, res)
    if r != OK:
        return PYTHON
    res[0], res[1] = vpn, 1 if (res[0] & 2) else 0
    return OK


@njit(cache=True)
def _sys_nr(buf, s, e, res):
    """`(?:NR |id=)(-?\\d+)`: the first position where either prefix is followed by a number."""
    for i in range(s, e):
        if _starts(buf, i, e, _L_NR) or _starts(buf, i, e, _L_ID):
            r = _decimal(buf, i + 3, e, True, res)
            if r != FAIL:
                return r
    return FAIL


@njit(cache=True)
def _sys_enter(buf, s, e, res):
    """SYSCALL_ENTER, `(?:__syscall_nr[=:]\\s*(-?\\d+))?`, matches at the payload start, with the
    number only where the payload starts with it: res = number, 1 if printed."""
    res[0], res[1] = 0, 0
    i = s + _L_SYSCALL_NR.size
    if not _starts(buf, s, e, _L_SYSCALL_NR) or i >= e or not (buf[i] == _EQ or buf[i] == _COLON):
        return OK
    r = _decimal(buf, _ws_end(buf, i + 1, e), e, True, res)
    if r == FAIL:
        res[0], res[1] = 0, 0
        return OK
    res[1] = 1
    return r


@njit(cache=True)
def scan_payloads(buf, spans, codes, result, a, b, comm):
    """Per line with a payload code (P_*): result (FAIL/OK/PYTHON), fields a/b, and for switches
    the next task's name span in comm[i]."""
    res = np.zeros(4, np.int64)
    for n in range(codes.size):
        code = codes[n]
        if code == P_NONE or code == P_PYTHON:
            result[n] = PYTHON
            continue
        s, e = spans[n, 4], spans[n, 5]
        if code == P_SWITCH:
            r = _switch(buf, s, e, res)
        elif code == P_SWITCH_COMPACT:
            r = _switch_compact(buf, s, e, res)
        elif code == P_TLB:
            r = _tlb(buf, s, e, res)
        elif code == P_FAULT:
            r = _fault(buf, s, e, res)
        elif code == P_IRQ:
            r = _first_number(buf, s, e, _L_IRQ, False, False, res)
        elif code == P_VECTOR:
            r = _first_number(buf, s, e, _L_VECTOR, False, False, res)
        elif code == P_SYS_NR:
            r = _sys_nr(buf, s, e, res)
        elif code == P_STATE:
            r = _first_number(buf, s, e, _L_STATE, False, False, res)
        elif code == P_DELTA:
            r = _first_number(buf, s, e, _L_DELTA, True, False, res)
        else:
            r = _sys_enter(buf, s, e, res)
        result[n] = r
        if r == OK:
            a[n], b[n] = res[0], res[1]
            if code == P_SWITCH or code == P_SWITCH_COMPACT:
                cs = _ws_end(buf, res[2], res[3])
                comm[n, 0], comm[n, 1] = cs, _rstrip(buf, cs, res[3])


@njit(cache=True)
def starts_with_any(buf, spans, table, offsets, out):
    """out[i] = buf[spans[i, 0]:spans[i, 1]] starts with one of the byte strings
    table[offsets[j]:offsets[j + 1]] (the kernel-thread name prefixes)."""
    for i in range(out.size):
        s, e = spans[i, 0], spans[i, 1]
        out[i] = False
        for j in range(offsets.size - 1):
            if _starts(buf, s, e, table[offsets[j]:offsets[j + 1]]):
                out[i] = True
                break

