import { z } from 'zod'
import { Version } from './common.ts'

/**
 * The buffered swap of `deltaport run` (client-agent/swap/): its settings file and the records of its
 * on-disk journal. See docs/decisions/0009-buffered-swap.md and docs/formats/swap-journal.md.
 */

const HttpMethod = z
  .string()
  .min(1)
  .max(16)
  .regex(/^[A-Z]+$/, 'an upper-case HTTP method')

/** A hook is an HTTP call to the service (POST to a path on its internal port), a signal, or nothing. */
export const HookSpec = z.union([
  z.object({ kind: z.literal('http'), path: z.string().regex(/^\/[\x21-\x7e]{0,255}$/) }),
  z.object({ kind: z.literal('signal'), signal: z.enum(['SIGUSR1', 'SIGUSR2', 'SIGHUP', 'SIGWINCH']) }),
  z.object({ kind: z.literal('none') }),
])
export type HookSpec = z.infer<typeof HookSpec>

/** An SLA tier: who is in it, how much its replays weigh, when it starts getting 503s, how long it waits. */
export const SlaTier = z.object({
  name: z.string().min(1).max(32),
  /** Replay weight; a tier with at least twice the weight of another always replays first. */
  weight: z.number().positive().max(1000),
  /** Client ids (the `clientHeader` value) in this tier. */
  clients: z.array(z.string().min(1).max(128)).max(100_000).default([]),
  /** Buffer fill (0..1] from which this tier's new writes are refused with 503 + Retry-After. */
  shedAt: z.number().gt(0).max(1),
  /** Multiplies the computed Retry-After: below 1 retries sooner. */
  retryFactor: z.number().positive().max(100).default(1),
})
export type SlaTier = z.infer<typeof SlaTier>

/**
 * `deltaport run --swap-config <file>`: every knob has a default. Strict: a misspelt knob would otherwise
 * run on its default without a word (deltaport.json refuses unknown keys the same way).
 */
export const SwapSettings = z.strictObject({
  /** Methods that are held during a swap; everything else is a read and goes to the old process. */
  writeMethods: z.array(HttpMethod).max(32).default(['POST', 'PUT', 'PATCH', 'DELETE']),
  /** Which request header names the client (for per-client order, tiers and forecasts). */
  clientHeader: z
    .string()
    .regex(/^[a-z0-9-]{1,64}$/)
    .default('x-client-id'),
  healthPath: z
    .string()
    .regex(/^\/[\x21-\x7e]{0,255}$/)
    .default('/health'),
  prepare: HookSpec.default({ kind: 'http', path: '/prepare' }),
  flush: HookSpec.default({ kind: 'http', path: '/flush' }),
  /** Buffered bodies kept in memory; beyond this they live only in the journal and are read back to replay. */
  memoryBytes: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32)
    .default(8 * 1024 * 1024),
  /** Hard cap on buffered bytes (memory + journal); the buffer's "fill" is measured against it. */
  maxBufferBytes: z
    .number()
    .int()
    .min(1)
    .max(2 ** 40)
    .default(256 * 1024 * 1024),
  /** Hard cap on the number of buffered writes. */
  maxBufferedWrites: z.number().int().min(1).max(10_000_000).default(100_000),
  /** Journal every buffered write before holding it (survives an agent crash); false: only the overflow. */
  writeAhead: z.boolean().default(true),
  /** A buffered write with a larger body is refused with 413 at once. */
  maxBodyBytes: z
    .number()
    .int()
    .min(0)
    .max(64 * 1024 * 1024)
    .default(1024 * 1024),
  /**
   * A buffered write whose body sends nothing for this long is answered 408 and its buffer room freed:
   * admitted from its headers, a stalled upload would keep that room until Node's 300 s requestTimeout.
   * A body forwarded live has the same bound (not counting time the service holds it back): stalled, it
   * kept its connection and a request in progress, which a stop waits for.
   */
  bodyIdleTimeoutMs: z.number().int().min(100).max(300_000).default(5_000),
  /**
   * The slowest a write's body may arrive, held or forwarded live, judged over each `windowMs` (0
   * bytes/s: off). A body that sends a byte just within every `bodyIdleTimeoutMs` never goes idle, yet
   * keeps its room as long as a stalled one did (live: stays in flight, which held every swap's drain);
   * below this rate it is answered 408 and its room freed too. A live window in which the service held
   * the body back is not judged. 512 B/s is far
   * below any working link (GPRS moves several KB/s) and far above a trickle.
   */
  bodyMinRate: z
    .object({
      bytesPerSecond: z.number().int().min(0).max(1_000_000_000).default(512),
      windowMs: z.number().int().min(1000).max(300_000).default(10_000),
    })
    .prefault({}),
  /**
   * An answer whose client takes none of it for this long (bytes wait to be sent, and none leave) is cut,
   * its connection closed. Its client held a connection to the service (the agent opens 256 to a
   * process) for as long as it stayed: 256 such clients took every one of them, and nobody else was
   * answered. Progress is seen per chunk handed on (up to 64 KiB), so the default asks for about
   * 1 KB/s at least; a client that reads, however slowly, is not cut.
   */
  answerIdleTimeoutMs: z.number().int().min(100).max(3_600_000).default(60_000),
  /**
   * A live request whose service has sent no byte of its answer for this long (counted once the request
   * is on a connection to the service, and again from each byte exchanged) gets 504 (problem+json) and its
   * connection to the service is closed. A service that accepts requests and hangs otherwise kept each of
   * them, with its connection (the agent opens 256 to a process), until it exited: writes whose clients had
   * hung up were kept for it, and in the end every connection was. nginx's `proxy_read_timeout`; raise it
   * for long-polling services.
   */
  serviceAnswerTimeoutMs: z.number().int().min(100).max(86_400_000).default(60_000),
  /**
   * Live requests from one client address (the connection's remote address, not `clientHeader`, which a
   * client chooses) that may be at the service at once, answers still being passed on included. More wait
   * in the proxy, holding nothing at the service, until one of that address's own ends. Without it clients
   * that never read their answers held every connection to the service: one address now holds at most
   * this many of the 256, whatever it does. Behind another reverse proxy every client has its address:
   * raise it there (256 or more never binds before the agent's own 256 do).
   */
  maxInFlightPerAddress: z.number().int().min(1).max(100_000).default(32),
  /** Requests from one address waiting for one of its `maxInFlightPerAddress`; one more gets 429. */
  maxWaitingPerAddress: z.number().int().min(0).max(100_000).default(256),
  /**
   * Upgraded connections (WebSocket, any `Upgrade:` tunnel) one client address may have open at once; one
   * more gets 429 (problem+json) and is closed. A cap of its own, not `maxInFlightPerAddress`: a tunnel
   * lives as long as its client keeps it (hours), so counted as in flight, an address's open WebSockets
   * would take the slots its ordinary requests need, and those would wait for good. Each tunnel holds
   * a connection to the service and two sockets in the agent; without a cap one address opened as many
   * as it liked. Behind another reverse proxy on the host every client has one address: raise it there.
   */
  maxTunnelsPerAddress: z.number().int().min(1).max(100_000).default(64),
  /** Buffered writes without this header are refused with 401 (null: no such rule). */
  requiredHeader: z
    .string()
    .regex(/^[a-z0-9-]{1,64}$/)
    .nullable()
    .default(null),
  /** A module whose default export judges each buffered write (see client-agent/swap/validator.ts). */
  validatorModule: z.string().min(1).max(4096).nullable().default(null),
  tiers: z.array(SlaTier).max(16).default([]),
  /** The tier of clients listed in no tier. */
  defaultTier: SlaTier.default({ name: 'default', weight: 1, clients: [], shedAt: 0.8, retryFactor: 1 }),
  healthTimeoutMs: z.number().int().min(100).max(600_000).default(15_000),
  /**
   * How long a new version on probation has to answer each replayed write; slower fails it (rollback).
   * Apart from `healthTimeoutMs`: a service's writes may legitimately take longer than its health check.
   */
  replayTimeoutMs: z.number().int().min(100).max(600_000).default(60_000),
  /** A new version that keeps answering its health check with non-2xx this long has failed it. */
  unhealthyGraceMs: z.number().int().min(0).max(600_000).default(2_000),
  hookTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
  stopTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
  /** After the switch, writes keep flowing through the replay path this long: a failure still rolls back. */
  probationMs: z.number().int().min(0).max(600_000).default(500),
  /** Replays in flight at once (one per client at most, so per-client order holds). */
  replayConcurrency: z.number().int().min(1).max(256).default(8),
  /**
   * A swap abandoned because the *running* version could not prepare, drain or flush (not the new
   * version's fault) is offered again after this long, doubling per attempt up to `deferRetryMaxMs`.
   */
  deferRetryMs: z.number().int().min(0).max(86_400_000).default(30_000),
  deferRetryMaxMs: z.number().int().min(0).max(86_400_000).default(1_800_000),
  /** A crashed service is restarted after this long, doubling per recent exit up to `restartBackoffMaxMs`. */
  restartBackoffMs: z.number().int().min(0).max(600_000).default(200),
  restartBackoffMaxMs: z.number().int().min(0).max(3_600_000).default(30_000),
  /**
   * Requests that arrive while a crashed service restarts are held for it this long at most (writes in
   * the swap buffer, bodiless GET/HEAD/OPTIONS waiting), then get 503 + Retry-After. A back-off at least
   * this long holds nothing (503 at once); 0 never holds.
   */
  restartHoldMs: z.number().int().min(0).max(600_000).default(10_000),
  /**
   * A version swapped in less than `crashLoopWindowMs` ago that has exited `crashLoopExits` times since
   * its switch is crash-looping: the previous version comes back (errorClass `crash`).
   */
  crashLoopExits: z.number().int().min(1).max(1000).default(3),
  crashLoopWindowMs: z.number().int().min(1000).max(86_400_000).default(300_000),
})
export type SwapSettings = z.infer<typeof SwapSettings>
export type SwapSettingsInput = z.input<typeof SwapSettings>

/** Limits of a journaled write; the proxy refuses (414/431) a write it could not journal within them. */
export const MAX_PATH = 8192
export const MAX_HEADERS = 128
export const MAX_HEADER_NAME = 256
export const MAX_HEADER_VALUE = 8192

const HeaderPair = z.tuple([z.string().max(MAX_HEADER_NAME), z.string().max(MAX_HEADER_VALUE)])

/** Most base64 text a journaled write's body may take. */
export const MAX_JOURNAL_BODY_CHARS = 96 * 1024 * 1024

/** A held write, journaled before anything waits on it. */
export const JournalWrite = z.object({
  t: z.literal('w'),
  id: z.number().int().nonnegative(),
  client: z.string().max(128),
  method: HttpMethod,
  path: z.string().min(1).max(MAX_PATH),
  headers: z.array(HeaderPair).max(MAX_HEADERS),
  /**
   * Standard base64 of the body (padded, no line breaks: what the agent writes); the agent caps bodies at
   * `maxBodyBytes`. Strict, so a reader can decode and size it in pieces (journal-payload.ts).
   */
  body: z
    .string()
    .max(MAX_JOURNAL_BODY_CHARS)
    .regex(/^[A-Za-z0-9+/]*={0,2}$/)
    .refine((body) => body.length % 4 === 0, 'base64 comes in groups of four characters'),
  at: z.number().int().nonnegative(),
})
export type JournalWrite = z.infer<typeof JournalWrite>

/** The write was answered (by a service, or refused by validation) and must not be replayed again. */
export const JournalDone = z.object({
  t: z.literal('d'),
  id: z.number().int().nonnegative(),
  status: z.number().int().min(100).max(599),
})
export type JournalDone = z.infer<typeof JournalDone>

export const JournalRecord = z.discriminatedUnion('t', [JournalWrite, JournalDone])
export type JournalRecord = z.infer<typeof JournalRecord>

/**
 * `<installRoot>/<name>/run/state.json`: versions that failed a swap (their health check, their start,
 * the replay, a crash soon after the switch) on this device. `run` does not try them again; `update`,
 * `install` of a channel and the daemon's prefetch skip them until the owner names one or passes
 * `--retry-failed` (ADR 0009, amended 2026-11-26). `failures` says when and why (files written before
 * it existed have only `failedVersions`); `uninstall` deletes the file.
 */
export const RunState = z.object({
  failedVersions: z.array(Version).max(1000).default([]),
  failures: z
    .array(
      z.object({
        version: Version,
        at: z.string().datetime(),
        reason: z.string().max(200),
      }),
    )
    .max(1000)
    .default([]),
})
export type RunState = z.infer<typeof RunState>

/** Deferred swaps deferred.json holds, and the agent keeps at once (swap/deferred-swaps.ts). */
export const MAX_RUN_DEFERRALS = 64

/**
 * `<installRoot>/<name>/run/deferred.json`: swaps the running version deferred, and when each is offered
 * again (wall-clock ms), so a restarted agent still retries them when due, with the same back-off.
 */
export const RunDeferrals = z.object({
  deferred: z
    .array(
      z.object({
        version: Version,
        attempt: z.number().int().min(1).max(1_000_000),
        retryAt: z.number().int().nonnegative(),
      }),
    )
    .max(MAX_RUN_DEFERRALS),
})
export type RunDeferrals = z.infer<typeof RunDeferrals>

/**
 * `<installRoot>/<name>/run/children.json`: service processes to reap after an agent crash, and the
 * versions they run (the store does not prune those).
 */
export const RunChildren = z.object({
  pids: z
    .array(
      z
        .number()
        .int()
        .min(2)
        .max(2 ** 22),
    )
    .max(64),
  versions: z.array(Version).max(64).default([]),
})
export type RunChildren = z.infer<typeof RunChildren>
