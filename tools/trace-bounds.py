#!/usr/bin/env python3
"""Hit ratios of idealised caches on a `replay` trace: what a policy could
reach with a given number of keys held, to tell a policy's losses from a
capacity's.

    cryptomem-tool replay --trace zipf --write-trace /tmp/zipf.bin
    tools/trace-bounds.py /tmp/zipf.bin 83800 98800

For each capacity (keys held) it prints, cache-aside and cold start included
as `replay` counts them (a hit is a GET of a key held; a miss inserts it):
  lru        exact LRU
  lfu-admit  exact request counts since the start, never aged: the key asked
             for least so far goes, and a new key comes in only if asked
             for more often than that key (TinyLFU's rule with a perfect
             sketch and a perfect victim choice)
  opt        Belady's optimum (evicts the key whose next request is
             furthest away): no policy does better
The trace file is what `replay --write-trace` writes: key numbers as 4-byte
little-endian integers. About 20 s per capacity for 2M requests.
"""

import array
import heapq
import sys
from collections import OrderedDict


def load(path):
    keys = array.array("I")
    if keys.itemsize != 4:
        sys.exit("this Python's array('I') is not 4 bytes wide")
    with open(path, "rb") as f:
        keys.frombytes(f.read())
    if sys.byteorder != "little":
        keys.byteswap()
    return keys


def lru(trace, capacity):
    held, hits = OrderedDict(), 0
    for k in trace:
        if k in held:
            held.move_to_end(k)
            hits += 1
        else:
            held[k] = None
            if len(held) > capacity:
                held.popitem(last=False)
    return hits


def lfu_admit(trace, capacity):
    counts, held, heap, hits = {}, {}, [], 0
    for k in trace:
        c = counts.get(k, 0) + 1
        counts[k] = c
        if k in held:
            hits += 1
            held[k] = c
            heapq.heappush(heap, (c, k))
            continue
        if len(held) < capacity:
            held[k] = c
            heapq.heappush(heap, (c, k))
            continue
        # Drop heap entries left behind by later requests of the same key.
        while held.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        least, victim = heap[0]
        if c > least:
            heapq.heappop(heap)
            del held[victim]
            held[k] = c
            heapq.heappush(heap, (c, k))
    return hits


def opt(trace, capacity):
    never = len(trace) + 1
    following, seen = [0] * len(trace), {}
    for i in range(len(trace) - 1, -1, -1):
        following[i] = seen.get(trace[i], never)
        seen[trace[i]] = i
    held, heap, hits = {}, [], 0
    for i, k in enumerate(trace):
        if k in held:
            hits += 1
        held[k] = following[i]
        heapq.heappush(heap, (-following[i], k))
        while len(held) > capacity:
            at, victim = heapq.heappop(heap)
            if held.get(victim) == -at:
                del held[victim]
    return hits


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    trace = load(sys.argv[1])
    for capacity in map(int, sys.argv[2:]):
        ratios = {name: f(trace, capacity) / len(trace) for name, f in (("lru", lru), ("lfu-admit", lfu_admit), ("opt", opt))}
        print(f"{capacity} keys: " + "  ".join(f"{n} {r:.4f}" for n, r in ratios.items()), flush=True)


if __name__ == "__main__":
    main()
