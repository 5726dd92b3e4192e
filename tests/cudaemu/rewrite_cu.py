#!/usr/bin/env python3
"""cudaemu source rewriter: a .cu file -> a C++ file for the emulator (tests only).

Only two CUDA syntax forms cannot be expressed with headers, and only they are rewritten, line numbers
unchanged (a #line directive keeps diagnostics pointing at the original file):
  * kernel launches  name<targs><<<grid, block[, smem[, stream]]>>>(args)
      -> ::cudaemu::make_launcher("name<targs>", __FILE__, __LINE__, name<targs>, grid, block, ...)(args)
  * extern __shared__ T name[];  ->  T* name = reinterpret_cast<T*>(::cudaemu::dynamic_smem());
Static __shared__ declarations stay as they are (__shared__ is `static`); a registration call is appended
on the same line so the emulator poisons them for every block.
Usage: rewrite_cu.py SRC.cu OUT.cpp DISPLAY_NAME
"""
import re
import sys


def find_launch_name(text, pos):
    """Start index of the kernel expression that ends just before text[pos] ('<<<')."""
    i = pos
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":  # template arguments
        depth = 0
        j = i - 1
        while j >= 0:
            if text[j] == ">":
                depth += 1
            elif text[j] == "<":
                depth -= 1
                if depth == 0:
                    break
            j -= 1
        i = j
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def rewrite_launches(text):
    out = []
    pos = 0
    while True:
        k = text.find("<<<", pos)
        if k < 0:
            out.append(text[pos:])
            return "".join(out)
        start = find_launch_name(text, k)
        end = text.index(">>>", k)
        name = text[start:k].rstrip()
        cfg = text[k + 3 : end]
        out.append(text[pos:start])
        label = " ".join(name.split()).replace('"', "'")
        out.append(f'::cudaemu::make_launcher("{label}", __FILE__, __LINE__, {name}, {cfg})')
        pos = end + 3


EXTERN = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s*)?([\w:\s\*]+?)\s+(\w+)\s*\[\s*\]\s*;")
STATIC = re.compile(r"^(\s*)__shared__\s+([^;]*);(.*)$")


def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def declarator_name(d):
    d = d.split("=")[0]
    d = d.split("[")[0]
    m = re.findall(r"[A-Za-z_]\w*", d)
    return m[-1]


def rewrite_line(line):
    line = EXTERN.sub(lambda m: f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(::cudaemu::dynamic_smem());", line)
    m = STATIC.match(line)
    if m and "extern" not in line:
        names = [declarator_name(d) for d in split_top(m.group(2))]
        regs = " ".join(f"::cudaemu::shared_decl(&{n}, sizeof({n}));" for n in names)
        line = f"{m.group(1)}__shared__ {m.group(2)}; {regs}{m.group(3)}"
    return line


def main():
    src, dst, display = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(src) as f:
        text = f.read()
    text = "\n".join(rewrite_line(l) for l in text.split("\n"))
    text = rewrite_launches(text)
    with open(dst, "w") as f:
        f.write(f'#line 1 "{display}"\n' + text)


if __name__ == "__main__":
    main()
