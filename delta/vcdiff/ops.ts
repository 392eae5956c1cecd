import { ADD, COPY } from './code-table.ts'

/**
 * The matcher's output for one target window before addresses are known: the source segment is
 * chosen only after matching (to span exactly the source bytes used), so copies keep absolute
 * positions here and the emitter rebases them.
 */
export class OpList {
  count = 0
  types = new Uint8Array(1024)
  sizes = new Int32Array(1024)
  /** ADD: target offset of the literal; RUN: the byte; COPY: absolute source or target position. */
  addrs = new Float64Array(1024)
  /** COPY only: 1 when the copy reads the target itself (earlier in this window). */
  self = new Uint8Array(1024)

  reset(): void {
    this.count = 0
  }

  push(type: number, size: number, addr: number, self: number): void {
    if (this.count === this.types.length) this.grow()
    const i = this.count++
    this.types[i] = type
    this.sizes[i] = size
    this.addrs[i] = addr
    this.self[i] = self
  }

  addLiteral(start: number, end: number): void {
    if (end > start) this.push(ADD, end - start, start, 0)
  }

  addCopy(size: number, addr: number, self: boolean): void {
    this.push(COPY, size, addr, self ? 1 : 0)
  }

  private grow(): void {
    const n = this.types.length * 2
    const t = new Uint8Array(n)
    t.set(this.types)
    const s = new Int32Array(n)
    s.set(this.sizes)
    const a = new Float64Array(n)
    a.set(this.addrs)
    const f = new Uint8Array(n)
    f.set(this.self)
    this.types = t
    this.sizes = s
    this.addrs = a
    this.self = f
  }
}
