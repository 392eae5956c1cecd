import { type ChildProcess, spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { z } from 'zod'

/** What load-child.ts prints when it stops (parsed, since it crosses a process boundary). */
export const LoadResult = z.object({
  requests: z.number(),
  errors: z.number(),
  timeouts: z.number(),
  resets: z.number(),
  reqErrors: z.number(),
  statuses: z.record(z.string(), z.number()),
  acks: z.record(z.string(), z.array(z.number())),
  protocolErrors: z.array(z.string()),
  protocolErrorCount: z.number(),
  samples: z.array(z.tuple([z.number(), z.number(), z.number()])),
})
export type LoadResult = z.infer<typeof LoadResult>

export interface RunningLoad {
  /** Stops the generator and returns everything it measured. */
  stop(): Promise<LoadResult>
}

/** Starts the load generator in its own process (so it does not share the proxy's event loop). */
export async function startLoad(
  url: string,
  rate: number,
  connections: number,
  clientPrefix = `load-${process.pid}`,
): Promise<RunningLoad> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--no-warnings',
      join(import.meta.dirname, 'load-child.ts'),
      url,
      String(rate),
      String(connections),
      clientPrefix,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const lines = createInterface({ input: child.stdout! })
  const iterator = lines[Symbol.asyncIterator]()
  const first = await iterator.next()
  if (first.done || !String(first.value).includes('ready')) throw new Error('load generator did not start')
  return {
    async stop() {
      child.stdin!.end()
      const last = await iterator.next()
      if (last.done) throw new Error('load generator exited without a result')
      return LoadResult.parse(JSON.parse(String(last.value)))
    },
  }
}

export interface WriteCheck {
  clients: number
  acknowledged: number
  logged: number
  /** Acknowledged writes missing from the service's log. */
  lost: number
  /** Log entries of a client out of sequence (reordered) or repeated. */
  reordered: number
  duplicated: number
}

/**
 * Checks the service's durable log against what clients were told: every acknowledged write appears
 * exactly once, and each client's writes appear as 1, 2, 3, … in log order.
 */
export async function checkWriteLog(dataDir: string, acks: Record<string, number[]>): Promise<WriteCheck> {
  const text = await readFile(join(dataDir, 'writes.log'), 'utf8').catch(() => '')
  const perClient = new Map<string, number[]>()
  for (const line of text.split('\n')) {
    if (!line) continue
    const entry = z.object({ client: z.string(), seq: z.number() }).parse(JSON.parse(line))
    const list = perClient.get(entry.client) ?? []
    list.push(entry.seq)
    perClient.set(entry.client, list)
  }
  let lost = 0
  let reordered = 0
  let duplicated = 0
  let acknowledged = 0
  let logged = 0
  for (const [client, list] of perClient) {
    logged += list.length
    const seen = new Set<number>()
    list.forEach((seq, i) => {
      if (seen.has(seq)) duplicated += 1
      else if (seq !== i + 1) reordered += 1
      seen.add(seq)
    })
    if (!acks[client]) continue
  }
  for (const [client, seqs] of Object.entries(acks)) {
    acknowledged += seqs.length
    const inLog = new Set(perClient.get(client) ?? [])
    for (const seq of seqs) if (!inLog.has(seq)) lost += 1
  }
  return { clients: Object.keys(acks).length, acknowledged, logged, lost, reordered, duplicated }
}

export interface Window {
  start: number
  end: number
}

export interface LatencySplit {
  baseline: { count: number; p50: number; p99: number }
  during: { count: number; p50: number; p99: number }
}

/**
 * p50/p99 of responses whose request overlapped a swap window vs those that did not; responses that
 * ended before `since` (the generator's warm-up: autocannon's first requests report connection set-up
 * as latency) are left out of both.
 */
export function splitLatency(
  samples: LoadResult['samples'],
  windows: readonly Window[],
  since = 0,
): LatencySplit {
  const inside: number[] = []
  const outside: number[] = []
  for (const [end, latency] of samples) {
    if (end < since) continue
    const start = end - latency
    const overlaps = windows.some((w) => start <= w.end && end >= w.start)
    ;(overlaps ? inside : outside).push(latency)
  }
  return { baseline: summary(outside), during: summary(inside) }
}

function summary(values: number[]) {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q: number) =>
    sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : 0
  return { count: sorted.length, p50: at(0.5), p99: at(0.99) }
}

/** Count of 5xx responses other than 503 (the deliberate buffer-pressure answer). */
export function unexpected5xx(samples: LoadResult['samples']): number {
  return samples.filter(([, , status]) => status >= 500 && status !== 503).length
}

export function count503(samples: LoadResult['samples']): number {
  return samples.filter(([, , status]) => status === 503).length
}
