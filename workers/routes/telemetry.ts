import { Hono } from 'hono'
import type { TelemetryReceipt } from '../../schemas/aggregation.ts'
import { TelemetryBatch } from '../../schemas/telemetry.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { anonymousClient, authenticateDevice } from '../devices/authenticate.ts'
import { readBoundedBody } from '../http/bounded-body.ts'
import { rateLimited } from '../http/problem.ts'
import { parseJsonBody } from '../http/validate.ts'
import { resolveRegion } from '../region.ts'

/** 1000 events of a few hundred bytes each fit comfortably; anything bigger is not telemetry. */
export const MAX_TELEMETRY_BYTES = 256 * 1024
/** Agents gzip their batches; what a batch may inflate to. */
export const MAX_TELEMETRY_INFLATED_BYTES = 1024 * 1024

/**
 * POST /v1/telemetry: a client's access batch goes, validated, to its region's RegionAggregator, which
 * rate-limits per client and drops replays. Bodies may be gzip (agents compress their batches). 202: accepted for aggregation (counts, not raw events, are kept).
 */
export const telemetryRouter = new Hono<AppEnv>().post('/', async (c) => {
  // The cached loader keeps the last good document: a garbled KV edit must not drop the region map
  // (any region name would then be accepted) nor reset the rate limit.
  const config = await getRuntimeConfig(c.env)
  // An enrolled device is counted as its device id, whatever client id the batch names (ADR 0026), so
  // one device cannot appear as many clients; checked before the body is read.
  const deviceId = await authenticateDevice(c, config, 'report')
  const body = await readBoundedBody(c.req.raw, MAX_TELEMETRY_BYTES, MAX_TELEMETRY_INFLATED_BYTES)
  const parsed = parseJsonBody(body, TelemetryBatch)
  const batch = { ...parsed, clientId: deviceId ?? anonymousClient(parsed.clientId) }
  const region = resolveRegion(c.req.raw, config)
  const stub = c.env.REGION_AGGREGATOR.get(c.env.REGION_AGGREGATOR.idFromName(region))
  const result = await stub.ingest({
    region,
    batch,
    ratePerMinute: config.limits.telemetryPerClientPerMinute,
  })
  if (result.status === 'rate-limited') {
    throw rateLimited('telemetry rate limit for this client exceeded', result.retryAfterSeconds)
  }
  const receipt: TelemetryReceipt = {
    region,
    accepted: result.status === 'accepted' ? result.accepted : 0,
    duplicate: result.status === 'replay',
    ...(result.status === 'replay' ? { lastSeq: result.lastSeq } : {}),
  }
  console.log(JSON.stringify({ level: 'info', msg: 'telemetry', ...receipt }))
  return c.json(receipt, 202)
})
