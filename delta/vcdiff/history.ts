import { check } from '../errors.ts'
import { E } from './errors.ts'
import type { SegmentReader } from './window.ts'

/**
 * Earlier target windows, kept by the streaming decoder so VCD_TARGET windows (whose source
 * segment is previously decoded output) can copy from them. Only the newest `retain` bytes are
 * kept to bound memory. The arrays are the ones handed to the sink, which per the ByteSink
 * contract copies what it keeps and never modifies them.
 */
export class TargetHistory {
  private readonly windows: Uint8Array[] = []
  private readonly starts: number[] = []
  private retained = 0
  /** Total bytes produced so far (absolute target offset of the next window). */
  produced = 0
  private readonly retain: number

  constructor(retain: number) {
    this.retain = retain
  }

  push(window: Uint8Array): void {
    this.windows.push(window)
    this.starts.push(this.produced)
    this.produced += window.length
    this.retained += window.length
    while (this.windows.length > 0 && this.retained - this.windows[0]!.length >= this.retain) {
      this.retained -= this.windows[0]!.length
      this.windows.shift()
      this.starts.shift()
    }
  }

  /** A reader for a VCD_TARGET segment [position, position + length) of earlier output. */
  segment(position: number, length: number): SegmentReader {
    check(position + length <= this.produced, E.window, 'vcdiff: VCD_TARGET segment is beyond decoded output')
    const oldest = this.starts[0] ?? this.produced
    check(
      length === 0 || position >= oldest,
      E.limit,
      'vcdiff: VCD_TARGET segment reaches further back than maxTargetHistory',
    )
    const windows = this.windows
    const starts = this.starts
    return {
      copy(offset, len, dst, at) {
        let abs = position + offset
        // Windows are few, so a linear scan from the newest is cheap and simple.
        let w = windows.length - 1
        while (w > 0 && starts[w]! > abs) w--
        while (len > 0) {
          const win = windows[w]!
          const from = abs - starts[w]!
          const k = Math.min(len, win.length - from)
          dst.set(win.subarray(from, from + k), at)
          at += k
          abs += k
          len -= k
          w++
        }
      },
    }
  }
}
