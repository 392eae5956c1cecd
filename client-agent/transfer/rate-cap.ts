import { setTimeout as sleep } from 'node:timers/promises'

/**
 * The device owner's download rate cap (`bandwidthCapBps`), shared by every response of one transfer:
 * each caller reports the bytes it just received and waits until the transfer as a whole is back
 * under the cap. Parallel ranges therefore share the cap instead of each getting it, and waiting in
 * the body reader applies back-pressure to the connection rather than buffering ahead of the cap.
 */
export class RateCap {
  private readonly bytesPerSecond: number
  private bytes = 0
  private began = 0

  /** `bytesPerSecond` 0 (or less) means no cap. */
  constructor(bytesPerSecond: number) {
    this.bytesPerSecond = bytesPerSecond
  }

  async received(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.bytesPerSecond <= 0) return
    if (this.bytes === 0) this.began = Date.now()
    this.bytes += bytes
    const dueMs = (this.bytes / this.bytesPerSecond) * 1000 - (Date.now() - this.began)
    // Short waits are not worth a timer; they add up in the next one.
    if (dueMs > 5) await sleep(dueMs, undefined, signal ? { signal } : {})
  }
}
