/**
 * Per-client state in a region: rate bucket, last batch sequence (replay guard), the last few uses
 * (for Markov prediction of this client's next use) and the versions its telemetry reported. Bounded:
 * history and installed lists are capped, and the least recently seen clients are evicted.
 */
import { z } from 'zod'
import { ArtifactName, Version } from '../schemas/common.ts'
import type { TokenBucket } from './rate-limit.ts'
import { parseStoredJson } from './stored-json.ts'

const Use = z.object({ artifact: ArtifactName, at: z.number() })
const Installed = z.object({ artifact: ArtifactName, version: Version, at: z.number() })
export type Use = z.infer<typeof Use>
export type Installed = z.infer<typeof Installed>

export interface ClientState {
  clientId: string
  lastSeq: number | null
  lastSeen: number
  bucket: TokenBucket | undefined
  history: Use[]
  installed: Installed[]
}

interface ClientRow extends Record<string, SqlStorageValue> {
  client_id: string
  last_seq: number | null
  last_seen: number
  tokens: number | null
  refilled_at: number | null
  history: string
  installed: string
}

export function createClientTable(sql: SqlStorage): void {
  sql.exec(`CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, last_seq INTEGER, last_seen INTEGER NOT NULL,
    tokens REAL, refilled_at INTEGER, history TEXT NOT NULL, installed TEXT NOT NULL)`)
  sql.exec('CREATE INDEX IF NOT EXISTS clients_last_seen ON clients (last_seen)')
}

/** Stored JSON is our own, but parsing it keeps a corrupt row from poisoning predictions. */
const parseList = <T>(schema: z.ZodType<T>, raw: string): T[] => parseStoredJson(raw, z.array(schema)) ?? []

export function readClient(sql: SqlStorage, clientId: string): ClientState | null {
  const row = sql.exec<ClientRow>('SELECT * FROM clients WHERE client_id = ?', clientId).toArray()[0]
  if (row === undefined) return null
  return {
    clientId,
    lastSeq: row.last_seq,
    lastSeen: row.last_seen,
    bucket:
      row.tokens === null || row.refilled_at === null
        ? undefined
        : { tokens: row.tokens, refilledAt: row.refilled_at },
    history: parseList(Use, row.history),
    installed: parseList(Installed, row.installed),
  }
}

export function writeClient(sql: SqlStorage, state: ClientState): void {
  sql.exec(
    `INSERT INTO clients (client_id, last_seq, last_seen, tokens, refilled_at, history, installed)
     VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (client_id) DO UPDATE SET last_seq = excluded.last_seq, last_seen = excluded.last_seen,
       tokens = excluded.tokens, refilled_at = excluded.refilled_at, history = excluded.history,
       installed = excluded.installed`,
    state.clientId,
    state.lastSeq,
    state.lastSeen,
    state.bucket?.tokens ?? null,
    state.bucket?.refilledAt ?? null,
    JSON.stringify(state.history),
    JSON.stringify(state.installed),
  )
}

export function countClients(sql: SqlStorage): number {
  return sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM clients').one().n
}

/**
 * Drops the least recently seen clients beyond `max`, given how many are stored (`count`: the caller
 * keeps it, since counting reads, and bills, every row); returns how many went.
 */
export function evictClients(sql: SqlStorage, max: number, count: number): number {
  const excess = count - max
  if (excess <= 0) return 0
  sql.exec(
    'DELETE FROM clients WHERE client_id IN (SELECT client_id FROM clients ORDER BY last_seen ASC, client_id LIMIT ?)',
    excess,
  )
  return excess
}

/** The client's last `limit` uses, oldest first. */
export function appendHistory(history: readonly Use[], uses: readonly Use[], limit: number): Use[] {
  return [...history, ...uses].sort((a, b) => a.at - b.at).slice(-limit)
}

/** Latest reported version per artifact, most recent `limit` artifacts. */
export function mergeInstalled(
  installed: readonly Installed[],
  reports: readonly Installed[],
  limit: number,
): Installed[] {
  const byName = new Map(installed.map((i) => [i.artifact, i]))
  for (const r of reports) {
    const old = byName.get(r.artifact)
    if (old === undefined || r.at >= old.at) byName.set(r.artifact, r)
  }
  return [...byName.values()].sort((a, b) => b.at - a.at).slice(0, limit)
}
