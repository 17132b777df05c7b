"""A cluster push's audience on the wire: the hand codec (``trionano.cluster._pushwire``) against
betterproto's generated classes (what the node used before), for one ``PushItem`` naming
``--uids`` uids (the push API's maximum by default).

Timed per item, in this process: the origin's encode (``Audience.encode``; before:
``bytes(pushpb.PushItem(...))``, once per gate) and a gate's decode (``decode_item`` plus the
uid list; before: ``pushpb.PushItem().parse``). Both for small uids (1..N) and for session-id
sized ones (~2**46, seven bytes each). Printed: milliseconds per item, hand and betterproto,
and the ratio betterproto / hand (medians of ``--runs`` >= 3).

Run: ``python -m bench.push_codec [--uids N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from trionano.cluster import Audience
from trionano.cluster import _pushwire as pushwire
from trionano.cluster._generated.trionano import push as pushpb


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def one_run(uids: list[int]) -> tuple[float, float, float, float]:
    audience = Audience.of_uids(uids)
    body = b'{"name":"ops","text":"hello"}'
    hand_bytes = audience.encode("onComment", body)
    hand_encode = best_of(lambda: audience.encode("onComment", body))
    generated_encode = best_of(
        lambda: bytes(pushpb.PushItem(route="onComment", data=body, uids=pushpb.Uids(uids=sorted(uids)))),
        repeat=3,
    )
    hand_decode = best_of(lambda: pushwire.decode_item(hand_bytes))
    generated_decode = best_of(lambda: pushpb.PushItem().parse(hand_bytes).uids.uids, repeat=3)
    return hand_encode, generated_encode, hand_decode, generated_decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uids", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs: at least 3 (medians)")
    for name, uids in (
        ("small uids (1..N)", list(range(1, args.uids + 1))),
        ("session-id uids (~2**46)", [63_264_351_372_978 + 7_919 * n for n in range(args.uids)]),
    ):
        runs = [one_run(uids) for _ in range(args.runs)]
        hand_encode, generated_encode, hand_decode, generated_decode = (
            statistics.median(run[i] for run in runs) for i in range(4)
        )
        print(f"{name}, {args.uids} uids per item, runs={args.runs}")
        print(
            f"  encode: hand {hand_encode * 1e3:.2f} ms, betterproto {generated_encode * 1e3:.2f} ms:"
            f" {generated_encode / hand_encode:.1f}x"
        )
        print(
            f"  decode: hand {hand_decode * 1e3:.2f} ms, betterproto {generated_decode * 1e3:.2f} ms:"
            f" {generated_decode / hand_decode:.1f}x"
        )


if __name__ == "__main__":
    main()
