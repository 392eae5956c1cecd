import { AddressCache, VCD_HERE, VCD_SELF } from './address-cache.ts'
import { adler32 } from './adler32.ts'
import { ADD, COPY, DEFAULT_NEAR, DEFAULT_OPCODES, DEFAULT_SAME } from './code-table.ts'
import { VCD_ADLER32, VCD_SOURCE } from './header.ts'
import type { OpList } from './ops.ts'
import { ByteWriter, varintLength } from './varint.ts'

/**
 * Writes one target window with the default code table: fuses ADD+COPY and COPY+ADD pairs into
 * single opcodes where the table has them and names each address in its cheapest cache mode.
 */
export class WindowEmitter {
  private readonly cache = new AddressCache(DEFAULT_NEAR, DEFAULT_SAME)
  private readonly data = new ByteWriter(1 << 16)
  private readonly inst = new ByteWriter(1 << 14)
  private readonly addr = new ByteWriter(1 << 14)
  private readonly checksum: boolean

  constructor(checksum: boolean) {
    this.checksum = checksum
  }

  /** Picks the mode with the shortest encoding, writes the address and updates the cache. */
  private address(a: number, here: number): number {
    const cache = this.cache
    const sameIdx = a % (DEFAULT_SAME * 256)
    let mode: number
    let value: number
    if (cache.same[sameIdx] === a) {
      mode = 2 + DEFAULT_NEAR + (sameIdx >> 8)
      this.addr.byte(sameIdx & 0xff)
    } else {
      mode = VCD_SELF
      value = a
      let cost = varintLength(a)
      const d = here - a
      if (varintLength(d) < cost) {
        mode = VCD_HERE
        value = d
        cost = varintLength(d)
      }
      for (let i = 0; i < DEFAULT_NEAR; i++) {
        const off = a - cache.near[i]!
        if (off >= 0 && varintLength(off) < cost) {
          mode = 2 + i
          value = off
          cost = varintLength(off)
        }
      }
      this.addr.varint(value)
    }
    cache.update(a)
    return mode
  }

  emit(out: ByteWriter, target: Uint8Array, start: number, end: number, ops: OpList): void {
    const codes = DEFAULT_OPCODES
    const { types, sizes, addrs, self } = ops
    // The source segment spans exactly the source bytes this window copies from.
    let segStart = Number.POSITIVE_INFINITY
    let segEnd = 0
    for (let i = 0; i < ops.count; i++) {
      if (types[i] === COPY && self[i] === 0) {
        segStart = Math.min(segStart, addrs[i]!)
        segEnd = Math.max(segEnd, addrs[i]! + sizes[i]!)
      }
    }
    const segLen = segEnd > 0 ? segEnd - segStart : 0
    if (segLen === 0) segStart = 0

    this.cache.reset()
    this.data.reset()
    this.inst.reset()
    this.addr.reset()
    const inst = this.inst
    let here = segLen // position in source+target address space
    const copyAddr = (i: number): number => (self[i] ? segLen + (addrs[i]! - start) : addrs[i]! - segStart)

    for (let i = 0; i < ops.count; i++) {
      const type = types[i]!
      const size = sizes[i]!
      if (type === ADD) {
        const a = addrs[i]!
        this.data.bytes(target, a, a + size)
        const j = i + 1
        if (size <= 4 && j < ops.count && types[j] === COPY && sizes[j]! <= 18) {
          const mode = this.address(copyAddr(j), here + size)
          const op = codes.addCopy[(mode * 5 + size) * 19 + sizes[j]!]!
          if (op >= 0) {
            inst.byte(op)
            here += size + sizes[j]!
            i++
            continue
          }
          // No fused form: the address is already written, so emit ADD then a lone COPY.
          this.writeAdd(size)
          this.writeCopy(mode, sizes[j]!)
          here += size + sizes[j]!
          i++
          continue
        }
        this.writeAdd(size)
        here += size
      } else if (type === COPY) {
        const mode = this.address(copyAddr(i), here)
        const j = i + 1
        if (size === 4 && j < ops.count && types[j] === ADD && sizes[j] === 1) {
          const op = codes.copyAdd[mode]!
          if (op >= 0) {
            inst.byte(op)
            this.data.byte(target[addrs[j]!]!)
            here += 5
            i++
            continue
          }
        }
        this.writeCopy(mode, size)
        here += size
      } else {
        inst.byte(codes.run)
        inst.varint(size)
        this.data.byte(addrs[i]!)
        here += size
      }
    }

    const targetLength = end - start
    const dataLen = this.data.length
    const instLen = inst.length
    const addrLen = this.addr.length
    const deltaLength =
      varintLength(targetLength) +
      1 +
      varintLength(dataLen) +
      varintLength(instLen) +
      varintLength(addrLen) +
      (this.checksum ? 4 : 0) +
      dataLen +
      instLen +
      addrLen
    out.byte((segLen > 0 ? VCD_SOURCE : 0) | (this.checksum ? VCD_ADLER32 : 0))
    if (segLen > 0) {
      out.varint(segLen)
      out.varint(segStart)
    }
    out.varint(deltaLength)
    out.varint(targetLength)
    out.byte(0) // Delta_Indicator: no secondary compression
    out.varint(dataLen)
    out.varint(instLen)
    out.varint(addrLen)
    if (this.checksum) out.u32be(adler32(target, start, end))
    out.bytes(this.data.view())
    out.bytes(inst.view())
    out.bytes(this.addr.view())
  }

  private writeAdd(size: number): void {
    const op = size < 19 ? DEFAULT_OPCODES.addSingle[size]! : -1
    if (op >= 0) {
      this.inst.byte(op)
    } else {
      this.inst.byte(DEFAULT_OPCODES.addExplicit)
      this.inst.varint(size)
    }
  }

  private writeCopy(mode: number, size: number): void {
    const op = size < 19 ? DEFAULT_OPCODES.copySingle[mode * 19 + size]! : -1
    if (op >= 0) {
      this.inst.byte(op)
    } else {
      this.inst.byte(DEFAULT_OPCODES.copyExplicit[mode]!)
      this.inst.varint(size)
    }
  }
}
