#!/usr/bin/env bash
# Regenerates bpf/vmlinux/<arch>/vmlinux.h, the kernel types the BPF programs
# are compiled against, from a BTF file given on the command line (a kernel's
# /sys/kernel/btf/vmlinux, or a vmlinux ELF with a .BTF section). Run by hand
# when the programs need types the checked-in header lacks; the build never
# runs it (it must not depend on the build host's kernel).
#   scripts/gen-vmlinux-h.sh BTF_FILE RELEASE [x86|arm64]
# (RELEASE: the kernel the BTF comes from, e.g. 6.18, written into the header;
# a BTF file does not say.)
set -euo pipefail
usage='usage: scripts/gen-vmlinux-h.sh BTF_FILE RELEASE [x86|arm64]'
btf=$(realpath "${1:?$usage}")
release=${2:?$usage}
arch=${3:-x86}
cd "$(dirname "$0")/.."
mkdir -p "bpf/vmlinux/$arch"
{
  echo "/* Kernel types for the BPF programs (CO-RE), $arch: generated once with"
  echo " * scripts/gen-vmlinux-h.sh from a Linux ${release} kernel's BTF and checked in, so that the"
  echo " * build never reads the build host's kernel. CO-RE relocates every field access"
  echo " * against the running kernel's own BTF at load (see docs/kernels.md). */"
  bpftool btf dump file "$btf" format c
} > "bpf/vmlinux/$arch/vmlinux.h.tmp"
mv "bpf/vmlinux/$arch/vmlinux.h.tmp" "bpf/vmlinux/$arch/vmlinux.h"
echo "wrote bpf/vmlinux/$arch/vmlinux.h"
