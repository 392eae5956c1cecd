import { Hono } from 'hono'
import { z } from 'zod'
import { rolloutCoordinator } from '../../durable-objects/rollout-coordinator.ts'
import { type ArtifactIndex, versionEntry } from '../../schemas/artifact-index.ts'
import { ArtifactName, Version } from '../../schemas/common.ts'
import { RestoreRequest, YankRequest, type YankResult } from '../../schemas/yank.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { requireMaintainer } from '../http/auth.ts'
import { readBoundedBody } from '../http/bounded-body.ts'
import { Problem } from '../http/problem.ts'
import { parseJsonBody, valid } from '../http/validate.ts'
import { assertMaintainerSigned } from '../publish/maintainer-keys.ts'
import { headsPassedOver, setYanked } from '../storage/yank.ts'

const VersionParam = z.object({ name: ArtifactName, version: Version })
/** A reason of at most 500 characters and a signed statement (≈1 KiB) fit easily. */
const MAX_YANK_BODY_BYTES = 16 * 1024

/**
 * `PUT /v1/publish/:name/:version/yank` pulls a bad release: channels stop pointing at it, plans and
 * installs stop picking it, and a rollout of it is aborted (workers/storage/yank.ts). `DELETE` restores
 * it. Both answer with the version's state and the channel heads after.
 */
export const yankRouter = new Hono<AppEnv>()
  .put('/:name/:version/yank', requireMaintainer, valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    const body = await readBoundedBody(c.req.raw, MAX_YANK_BODY_BYTES, MAX_YANK_BODY_BYTES)
    const { reason, statement } = parseJsonBody(body, YankRequest)
    await requireStatementIfConfigured(c.env, statement, `yank ${name}@${version}`)
    if (statement) await assertMaintainerSigned(c.env, statement, `the yank statement for ${name}@${version}`)
    const note = { at: statement?.signed.at ?? new Date().toISOString(), reason }
    const index = await setYanked(c.env.ARTIFACTS, name, version, note, statement)
    const rolloutsAborted = await abortRolloutsOf(c.env, index, version, `yanked: ${reason}`)
    log('version yanked', name, version, reason)
    return c.json(resultOf(index, version, rolloutsAborted))
  })
  .delete('/:name/:version/yank', requireMaintainer, valid('param', VersionParam), async (c) => {
    const { name, version } = c.req.valid('param')
    // The body is optional: a signed restore, so devices ignore the older yank if it is replayed.
    const body = c.req.raw.body
      ? await readBoundedBody(c.req.raw, MAX_YANK_BODY_BYTES, MAX_YANK_BODY_BYTES)
      : new Uint8Array()
    const { statement } = body.byteLength === 0 ? {} : parseJsonBody(body, RestoreRequest)
    await requireStatementIfConfigured(c.env, statement, `restore ${name}@${version}`)
    if (statement)
      await assertMaintainerSigned(c.env, statement, `the restore statement for ${name}@${version}`)
    const index = await setYanked(c.env.ARTIFACTS, name, version, null, statement)
    await restoreRolloutsOf(c.env, index, version)
    log('version restored', name, version)
    return c.json(resultOf(index, version, []))
  })

/** With runtime config `yank.requireStatement`, an unsigned yank or restore is refused before any change. */
async function requireStatementIfConfigured(env: Env, statement: unknown, what: string): Promise<void> {
  if (statement !== undefined || !(await getRuntimeConfig(env)).yank.requireStatement) return
  throw new Problem(
    422,
    'untrusted-signature',
    `this edge takes only signed yanks and restores (runtime config yank.requireStatement): ${what} with a maintainer key (deltaport yank --key)`,
  )
}

/**
 * Tells each channel's coordinator `version` is yanked (a start of it racing this yank is then refused)
 * and aborts its active rollout of it; the channels aborted. The entry's yankRevision goes along, so a
 * restore written to the index after this yank but heard by a coordinator first still wins there.
 */
async function abortRolloutsOf(env: Env, index: ArtifactIndex, version: string, reason: string) {
  const entry = versionEntry(index, version)
  const aborted: string[] = []
  for (const channel of entry?.channels ?? []) {
    if (await rolloutCoordinator(env, index.name, channel).abortVersion(version, reason, entry?.yankRevision))
      aborted.push(channel)
  }
  return aborted
}

/** Lets each channel the version was published to roll it out again (abortRolloutsOf remembered the yank). */
async function restoreRolloutsOf(env: Env, index: ArtifactIndex, version: string): Promise<void> {
  const entry = versionEntry(index, version)
  for (const channel of entry?.channels ?? [])
    await rolloutCoordinator(env, index.name, channel).restoreVersion(version, entry?.yankRevision)
}

function resultOf(index: ArtifactIndex, version: string, rolloutsAborted: string[]): YankResult {
  const entry = versionEntry(index, version)
  const passedOver = headsPassedOver(index, version)
  if (Object.keys(passedOver).length > 0) {
    console.log(
      JSON.stringify({
        level: 'warn',
        msg: 'heads passed over versions without a blob',
        name: index.name,
        version,
        passedOver,
      }),
    )
  }
  return {
    name: index.name,
    version,
    yanked: entry?.yanked ?? null,
    signed: entry?.yankStatement !== undefined,
    channels: index.channels,
    channelsWithoutHead: (entry?.channels ?? []).filter((channel) => index.channels[channel] === undefined),
    rolloutsAborted,
    headsPassedOver: passedOver,
  }
}

function log(msg: string, name: string, version: string, reason?: string) {
  console.log(JSON.stringify({ level: 'info', msg, name, version, ...(reason ? { reason } : {}) }))
}
