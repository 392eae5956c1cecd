import { check } from '../errors.ts'
import { E } from './errors.ts'
import type { SegmentReader } from './window.ts'

/**
 * The newest `retain` bytes of earlier output, kept by the streaming decoder so VCD_TARGET windows
 * (whose source segment is previously decoded output) can copy from them. Output is copied into a
 * ring buffer of at most `retain` bytes (grown as output arrives), so the decoder can reuse its
 * window buffer and memory stays bounded by `retain`, however large the windows are.
 */
export class TargetHistory {
  private ring = new Uint8Array(0)
  /** Total bytes produced so far (absolute target offset of the next window). */
  produced = 0
  private readonly retain: number

  constructor(retain: number) {
    this.retain = Math.max(0, Math.floor(retain))
  }

  /** Oldest absolute offset still held. */
  private get oldest(): number {
    return this.produced - Math.min(this.produced, this.retain)
  }

  push(window: Uint8Array): void {
    const retain = this.retain
    if (retain > 0) {
      const held = Math.min(retain, this.produced + window.length)
      if (this.ring.length < held) this.grow(held)
      // Only the last `retain` bytes of this window can matter.
      const part = window.length > retain ? window.subarray(window.length - retain) : window
      let at = (this.produced + window.length - part.length) % this.ring.length
      let from = 0
      while (from < part.length) {
        const n = Math.min(part.length - from, this.ring.length - at)
        this.ring.set(part.subarray(from, from + n), at)
        from += n
        at = (at + n) % this.ring.length
      }
    }
    this.produced += window.length
  }

  /** Grows the ring to `size` bytes (≤ retain), keeping the held bytes at their offsets mod size. */
  private grow(size: number): void {
    const next = new Uint8Array(Math.min(this.retain, Math.max(size, this.ring.length * 2)))
    const start = this.oldest
    for (let abs = start; abs < this.produced; ) {
      const at = abs % this.ring.length
      const n = Math.min(this.produced - abs, this.ring.length - at)
      const to = abs % next.length
      // The held bytes fit in `next`, but may wrap around its end.
      const first = Math.min(n, next.length - to)
      next.set(this.ring.subarray(at, at + first), to)
      if (first < n) next.set(this.ring.subarray(at + first, at + n), 0)
      abs += n
    }
    this.ring = next
  }

  /** A reader for a VCD_TARGET segment [position, position + length) of earlier output. */
  segment(position: number, length: number): SegmentReader {
    check(position + length <= this.produced, E.window, 'vcdiff: VCD_TARGET segment is beyond decoded output')
    check(
      length === 0 || position >= this.oldest,
      E.limit,
      'vcdiff: VCD_TARGET segment reaches further back than maxTargetHistory',
    )
    const ring = this.ring
    return {
      copy(offset, len, dst, at) {
        let abs = position + offset
        while (len > 0) {
          const from = abs % ring.length
          const k = Math.min(len, ring.length - from)
          dst.set(ring.subarray(from, from + k), at)
          at += k
          abs += k
          len -= k
        }
      },
    }
  }
}
