import { getEventListeners } from 'node:events'

/**
 * What a long-lived signal (the daemon's lifetime) still holds of the work done under it: its abort
 * listeners, and the entries Node's AbortSignal.any leaves in a source's set of dependants, never
 * pruned on Node 22 (an internal symbol, read by its description: 0 when Node names it otherwise,
 * and the listener count still holds).
 */
export function linksOf(signal: AbortSignal): { listeners: number; dependants: number } {
  const symbol = Object.getOwnPropertySymbols(signal).find((s) => s.description === 'kDependantSignals')
  const dependants = symbol ? (Reflect.get(signal, symbol) as Set<unknown> | undefined) : undefined
  return { listeners: getEventListeners(signal, 'abort').length, dependants: dependants?.size ?? 0 }
}
