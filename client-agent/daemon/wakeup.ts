/**
 * Ends the daemon's wait between cycles early: SIGHUP (`systemctl reload deltaport-daemon`) means
 * "look at the config file and poll now", as it means "check now" to `deltaport run`. A wake that
 * arrives during a cycle is kept, so the wait after that cycle ends at once instead of being lost.
 */
export class Wakeup {
  #pending = false
  #endWait: (() => void) | undefined

  wake(): void {
    if (this.#endWait) this.#endWait()
    else this.#pending = true
  }

  /** Waits `ms`, or less if woken or `signal` aborts; 'woken' only when a wake ended it. */
  wait(ms: number, signal: AbortSignal): Promise<'woken' | 'elapsed'> {
    if (this.#pending) {
      this.#pending = false
      return Promise.resolve('woken')
    }
    return new Promise((resolve) => {
      const end = (how: 'woken' | 'elapsed') => {
        clearTimeout(timer)
        signal.removeEventListener('abort', aborted)
        this.#endWait = undefined
        resolve(how)
      }
      const aborted = () => end('elapsed')
      const timer = setTimeout(() => end('elapsed'), ms)
      signal.addEventListener('abort', aborted, { once: true })
      if (signal.aborted) end('elapsed')
      else this.#endWait = () => end('woken')
    })
  }
}
