/**
 * Per client address, how many live requests it has at the service and which wait for one of them to end
 * (proxy.ts `forward`). An address may have `maxInFlight` at once, so however it behaves (reading none of
 * its answers, keeping writes the service never answers) it holds at most that many of the agent's
 * connections to a process; the rest of them stay for everyone else.
 */
export class AddressSlots {
  private readonly byAddress = new Map<string, { inFlight: number; waiting: Array<() => void> }>()
  private readonly maxInFlight: number
  private readonly maxWaiting: number

  constructor(maxInFlight: number, maxWaiting: number) {
    this.maxInFlight = maxInFlight
    this.maxWaiting = maxWaiting
  }

  /**
   * Runs `start` with a slot of `address` (at once, or when one of its requests in flight ends), giving it
   * the `release` to call once, when its request has left the service. False, running nothing, when the
   * address already has `maxWaiting` waiting. `abandoned` gives the wait up (its client went): what it
   * returns is then never run.
   */
  acquire(
    address: string,
    start: (release: () => void) => void,
  ): { queued: boolean; abandon: () => void } | false {
    let entry = this.byAddress.get(address)
    if (!entry) {
      entry = { inFlight: 0, waiting: [] }
      this.byAddress.set(address, entry)
    }
    const slots = entry
    const run = () => {
      slots.inFlight += 1
      let released = false
      start(() => {
        if (released) return
        released = true
        slots.inFlight -= 1
        const next = slots.waiting.shift()
        if (next) next()
        else if (slots.inFlight === 0) this.byAddress.delete(address)
      })
    }
    if (slots.inFlight < this.maxInFlight) {
      run()
      return { queued: false, abandon: () => undefined }
    }
    if (slots.waiting.length >= this.maxWaiting) return false
    slots.waiting.push(run)
    return {
      queued: true,
      abandon: () => {
        const at = slots.waiting.indexOf(run)
        if (at >= 0) slots.waiting.splice(at, 1)
      },
    }
  }

  /** Live requests of `address` at the service now (for tests and diagnostics). */
  inFlight(address: string): number {
    return this.byAddress.get(address)?.inFlight ?? 0
  }
}
