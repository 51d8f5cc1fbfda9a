/* Attached to the switch side of the director's veth in the XDP rig: a veth delivers the
 * frames its peer sends with XDP_TX only when it has an XDP program itself (it then runs
 * the NAPI that takes them in). This one passes every frame on to the bridge. */
#include <linux/bpf.h>

__attribute__((section("xdp"), used)) int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] __attribute__((section("license"), used)) = "GPL";
