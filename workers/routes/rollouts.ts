import type { Context } from 'hono'
import { Hono } from 'hono'
import { lt as semverLess } from 'semver'
import { z } from 'zod'
import { type RolloutResult, rolloutCoordinator } from '../../durable-objects/rollout-coordinator.ts'
import { type ArtifactIndex, channelHead, versionEntry } from '../../schemas/artifact-index.ts'
import type { ArtifactManifest } from '../../schemas/manifest.ts'
import {
  RolloutCheckQuery,
  RolloutControl,
  RolloutOutcome,
  RolloutParams,
  RolloutSpec,
} from '../../schemas/rollout.ts'
import type { RolloutControlAction } from '../../schemas/rollout-control-statement.ts'
import type { ServedRolloutCheck } from '../../schemas/rollout-statement.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { anonymousClient, authenticateDevice } from '../devices/authenticate.ts'
import { requireMaintainer } from '../http/auth.ts'
import { readBoundedBody } from '../http/bounded-body.ts'
import { Problem } from '../http/problem.ts'
import { parseJsonBody, valid } from '../http/validate.ts'
import { rolloutControlRequest } from '../publish/rollout-control.ts'
import { signRolloutCheck } from '../signing/index-statement.ts'
import { readIndex, requirePublished } from '../storage/artifact-store.ts'

/** Rollout specs, control bodies and outcomes are a few hundred bytes; anything bigger is not one. */
export const MAX_ROLLOUT_BODY_BYTES = 16 * 1024
/**
 * The longest an "in" answer's statement is valid (ADR 0034, amended). It moves a device to the
 * rollout's version, and anyone can ask for a device's answer with its client id, so one collected while
 * the device was admitted and replayed after an abort would move it to the aborted version for as long
 * as it stays valid (a day by default). An hour matches the clock skew the agent already tolerates the
 * other way (a statement issued up to an hour ahead of its clock); devices ask afresh before each update.
 */
export const MAX_IN_ANSWER_TTL_SECONDS = 3600
/** How far ahead a rollout may be scheduled. */
const MAX_SCHEDULE_AHEAD_MS = 365 * 86_400_000

type RolloutContext = Context<AppEnv>

/** The coordinator of one artifact and channel. */
function coordinator(c: RolloutContext, params: { name: string; channel: string }) {
  return rolloutCoordinator(c.env, params.name, params.channel)
}

/** Turns the coordinator's error values into problem+json. */
function unwrap<T>(result: RolloutResult<T>): T {
  if (result.ok) return result.value
  const slug = result.status === 404 ? 'not-found' : result.status === 409 ? 'conflict' : 'too-many-requests'
  throw new Problem(result.status, slug, result.detail, {
    ...(result.retryAfterSeconds === undefined
      ? {}
      : { headers: { 'retry-after': String(result.retryAfterSeconds) } }),
  })
}

/** The request body, bounded (empty when there is none). */
async function bodyBytes(c: RolloutContext): Promise<Uint8Array> {
  return c.req.raw.body
    ? await readBoundedBody(c.req.raw, MAX_ROLLOUT_BODY_BYTES, MAX_ROLLOUT_BODY_BYTES)
    : new Uint8Array()
}

/** A small JSON body (empty allowed when `schema` accepts `{}`), validated. */
async function jsonBody<Schema extends z.ZodType>(
  c: RolloutContext,
  schema: Schema,
): Promise<z.infer<Schema>> {
  const bytes = await bodyBytes(c)
  return parseJsonBody(bytes.length === 0 ? new TextEncoder().encode('{}') : bytes, schema)
}

/** A maintainer control body: plain, or a signed statement standing for it (ADR 0038). */
async function controlBody<Schema extends z.ZodType>(
  c: RolloutContext,
  params: { name: string; channel: string },
  action: RolloutControlAction,
  schema: Schema,
) {
  return rolloutControlRequest(c.env, await bodyBytes(c), { ...params, action }, schema)
}

/** Resume takes no fields; a signed resume carries `{}` as its request. */
const ResumeRequest = z.object({})

const noStore = (c: RolloutContext) => c.header('cache-control', 'no-store')

/**
 * /v1/rollouts/:name/:channel — staged rollouts (durable-objects/rollout-coordinator.ts). Agents ask
 * whether they are in and report outcomes (public); maintainers start, pause, resume, abort and read
 * the status with the bearer token.
 */
export const rolloutsRouter = new Hono<AppEnv>()
  .get('/:name/:channel', valid('param', RolloutParams), valid('query', RolloutCheckQuery), async (c) => {
    const params = c.req.valid('param')
    const { client } = c.req.valid('query')
    const check = unwrap(await coordinator(c, params).check(client))
    // Signed like the index (ADR 0034): a device pinning the index key refuses a stale or altered answer.
    const { index: lifetime } = await getRuntimeConfig(c.env)
    const ttl = check.in
      ? Math.min(lifetime.statementTtlSeconds, MAX_IN_ANSWER_TTL_SECONDS)
      : lifetime.statementTtlSeconds
    const statement = await signRolloutCheck(c.env, check, client, ttl)
    const served: ServedRolloutCheck = statement ? { ...check, statement } : check
    noStore(c)
    return c.json(served)
  })
  .post('/:name/:channel/outcomes', valid('param', RolloutParams), async (c) => {
    const params = c.req.valid('param')
    // An enrolled device reports as its device id (ADR 0026): one device, one sample.
    const deviceId = await authenticateDevice(c, await getRuntimeConfig(c.env), 'report')
    const reported = await jsonBody(c, RolloutOutcome)
    const outcome = { ...reported, client: deviceId ?? anonymousClient(reported.client) }
    const receipt = unwrap(await coordinator(c, params).report(outcome))
    console.log(
      JSON.stringify({
        level: 'info',
        msg: 'rollout outcome',
        ...params,
        outcome: outcome.outcome,
        ...receipt,
      }),
    )
    return c.json(receipt, 202)
  })
  .get('/:name/:channel/status', requireMaintainer, valid('param', RolloutParams), async (c) => {
    const status = unwrap(await coordinator(c, c.req.valid('param')).status())
    noStore(c)
    return c.json(status)
  })
  .post('/:name/:channel/start', requireMaintainer, valid('param', RolloutParams), async (c) => {
    const params = c.req.valid('param')
    const { request: spec, signedAt } = await controlBody(c, params, 'start', RolloutSpec)
    if (spec.startAt !== undefined && Date.parse(spec.startAt) > Date.now() + MAX_SCHEDULE_AHEAD_MS) {
      throw new Problem(422, 'unprocessable', 'startAt is more than a year ahead')
    }
    const published = await requirePublished(c.env.ARTIFACTS, params.name, spec.version)
    const index = (await readIndex(c.env.ARTIFACTS, params.name))?.index
    // A channel no device can follow (a typo like "stabel") would run and "complete" unseen.
    const signedFor = published.envelope.signed.channels
    const channels = new Set([...Object.keys(index?.channels ?? {}), ...signedFor])
    if (!channels.has(params.channel))
      throw new Problem(
        422,
        'unprocessable',
        `${params.name} has no channel "${params.channel}" (channels: ${[...channels].sort().join(', ') || 'none'})`,
      )
    // Agents refuse a channel's version whose signed manifest does not list the channel (mix-and-match).
    if (!signedFor.includes(params.channel))
      throw new Problem(
        422,
        'unprocessable',
        `${params.name}@${spec.version} was not published to channel "${params.channel}" (its signed manifest lists: ${signedFor.join(', ') || 'none'}); devices would refuse it`,
      )
    if (index) assertDevicesWouldTake(index, params.channel, published.envelope.signed)
    const status = unwrap(
      await coordinator(c, params).start({ ...params, spec, ...(signedAt ? { signedAt } : {}) }),
    )
    return c.json(status, 201)
  })
  .post('/:name/:channel/pause', requireMaintainer, valid('param', RolloutParams), async (c) => {
    const params = c.req.valid('param')
    const { request, signedAt } = await controlBody(c, params, 'pause', RolloutControl)
    return c.json(unwrap(await coordinator(c, params).pause(request, signedAt)))
  })
  .post('/:name/:channel/resume', requireMaintainer, valid('param', RolloutParams), async (c) => {
    const params = c.req.valid('param')
    const { signedAt } = await controlBody(c, params, 'resume', ResumeRequest)
    return c.json(unwrap(await coordinator(c, params).resume(signedAt)))
  })
  .post('/:name/:channel/abort', requireMaintainer, valid('param', RolloutParams), async (c) => {
    const params = c.req.valid('param')
    const { request, signedAt } = await controlBody(c, params, 'abort', RolloutControl)
    return c.json(unwrap(await coordinator(c, params).abort(request, signedAt)))
  })

/**
 * A rollout admits devices to a version they must then be able to install: not a yanked one (agents
 * refuse it, `yanked`), and not one signed before the channel's head (devices that run the head refuse
 * a lower serial as a rollback). Either would only turn every admitted device into a failure report.
 * Nor one older than the head, even signed after it (a backport): devices would take it, so admitted
 * devices running the head would be moved down, the one thing a channel never does by publishing, and
 * once they have seen its serial they would refuse the head again as a rollback, stranded below it.
 */
function assertDevicesWouldTake(index: ArtifactIndex, channel: string, manifest: ArtifactManifest): void {
  const entry = versionEntry(index, manifest.version)
  if (entry?.yanked)
    throw new Problem(
      422,
      'unprocessable',
      `${manifest.name}@${manifest.version} is yanked (${entry.yanked.reason}); devices refuse it. Restore it first, or roll out a fixed version`,
    )
  const head = channelHead(index, channel)
  const headSerial = head === undefined ? undefined : versionEntry(index, head)?.serial
  if (headSerial !== undefined && manifest.serial < headSerial)
    throw new Problem(
      422,
      'unprocessable',
      `${manifest.name}@${manifest.version} (serial ${manifest.serial}) was signed before the "${channel}" head ${head} (serial ${headSerial}); devices running the head refuse it as a rollback. Publish the fix as a new version and roll that out`,
    )
  if (head !== undefined && semverLess(manifest.version, head))
    throw new Problem(
      422,
      'unprocessable',
      `${manifest.name}@${manifest.version} is older than the "${channel}" head ${head}: devices running the head would be moved down to it, and would then refuse the head (its serial is lower). Roll out a version at least as new as the head, or give the backport a channel of its own`,
    )
}
