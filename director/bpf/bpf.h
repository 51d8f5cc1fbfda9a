/* The few libbpf conventions the XDP program needs, so it builds with clang and the kernel
 * UAPI headers alone (no libbpf-dev): section names, BTF map definitions and the helpers it
 * calls, by their stable helper numbers (include/uapi/linux/bpf.h). */
#ifndef STRATA_BPF_H
#define STRATA_BPF_H

#include <linux/types.h>
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

/* BTF-defined maps, as libbpf and aya read them. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;

#endif
