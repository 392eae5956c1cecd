import { check, DeltaFormatError } from '../errors.ts'
import { E } from './errors.ts'
import type { Cursor } from './varint.ts'
import { readVarint } from './varint.ts'

export const VCD_SELF = 0
export const VCD_HERE = 1

/**
 * RFC 3284 section 5.1-5.3 near/same caches. Both sides run the same updates after every COPY, so
 * the encoder can name an address by a small offset from a recent one. Reset at every window.
 */
export class AddressCache {
  readonly nearSize: number
  readonly sameSize: number
  readonly near: Float64Array
  readonly same: Float64Array
  nextSlot = 0

  constructor(nearSize: number, sameSize: number) {
    this.nearSize = nearSize
    this.sameSize = sameSize
    this.near = new Float64Array(nearSize)
    this.same = new Float64Array(sameSize * 256)
  }

  reset(): void {
    this.near.fill(0)
    this.same.fill(0)
    this.nextSlot = 0
  }

  update(addr: number): void {
    if (this.nearSize > 0) {
      this.near[this.nextSlot] = addr
      this.nextSlot = (this.nextSlot + 1) % this.nearSize
    }
    if (this.sameSize > 0) this.same[addr % (this.sameSize * 256)] = addr
  }

  /** Decodes one address in `mode`; `here` is the current position in the source+target space. */
  decode(c: Cursor, mode: number, here: number): number {
    let addr: number
    // One-byte integers (most near-cache offsets) without a call into readVarint.
    const b = c.pos < c.end ? c.buf[c.pos]! : 0x80
    if (mode < 2 + this.nearSize && b < 0x80) {
      c.pos++
      addr = mode === VCD_SELF ? b : mode === VCD_HERE ? here - b : this.near[mode - 2]! + b
    } else if (mode === VCD_SELF) {
      addr = readVarint(c, 'COPY address')
    } else if (mode === VCD_HERE) {
      addr = here - readVarint(c, 'COPY address')
    } else if (mode < 2 + this.nearSize) {
      addr = this.near[mode - 2]! + readVarint(c, 'COPY address')
    } else {
      check(c.pos < c.end, E.truncated, 'vcdiff: input ends inside COPY address')
      addr = this.same[(mode - 2 - this.nearSize) * 256 + c.buf[c.pos++]!]!
    }
    // Plain if, not check(): a template message would be built for every COPY decoded.
    if (!(addr >= 0 && addr < here)) {
      throw new DeltaFormatError(E.address, `vcdiff: COPY address ${addr} outside [0, ${here})`)
    }
    this.update(addr)
    return addr
  }
}
