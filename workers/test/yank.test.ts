import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { coordinatorStub, HOUR, startRollout, statusOf } from '../../durable-objects/test/rollout-helpers.ts'
import { ArtifactIndex, versionEntry } from '../../schemas/artifact-index.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { RolloutStatus } from '../../schemas/rollout.ts'
import { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { YankResult } from '../../schemas/yank.ts'
import type { YankStatement } from '../../schemas/yank-statement.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import { pruneStorage } from '../retention/prune.ts'
import { keys } from '../storage/keys.ts'
import { setYanked } from '../storage/yank.ts'
import { putBlob } from './delta-helpers.ts'
import { auth, bytesOf, call, envelopeFor, sha256, startPublish } from './publish-helpers.ts'

async function publish(name: string, version: string, serial: number, channels = ['stable']) {
  const body = bytesOf(1500, serial)
  expect((await startPublish(await envelopeFor(name, version, body, { serial, channels }))).status).toBe(201)
  expect((await putBlob(name, version, body)).status).toBe(201)
  return body
}

function yank(name: string, version: string, reason: string | null, headers: Record<string, string> = auth) {
  return call(`/v1/publish/${name}/${version}/yank`, {
    method: reason === null ? 'DELETE' : 'PUT',
    headers: { ...headers, 'content-type': 'application/json' },
    ...(reason === null ? {} : { body: JSON.stringify({ reason }) }),
  })
}

async function result(response: Response): Promise<YankResult> {
  expect(response.status).toBe(200)
  return YankResult.parse(await response.json())
}

async function rolloutOf(name: string): Promise<RolloutStatus> {
  return RolloutStatus.parse(await (await statusOf(name)).json())
}

async function indexOf(name: string): Promise<ArtifactIndex> {
  return ArtifactIndex.parse(await (await call(`/v1/artifacts/${name}`)).json())
}

function planFor(name: string, installed: string | null, target: string) {
  return call('/v1/plan', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      name,
      installed,
      target,
      capabilities: { methods: ['vcdiff'], chunkSync: false },
    }),
  })
}

describe('yanking a release', () => {
  it('moves each of its channels to the highest version not yanked and keeps its bytes served', async () => {
    await publish('bad', '1.0.0', 1, ['stable', 'beta'])
    const body = await publish('bad', '1.1.0', 2, ['stable', 'beta'])
    await publish('bad', '1.2.0-rc.1', 3, ['beta'])

    const yanked = await result(await yank('bad', '1.1.0', 'crashes on ARM'))
    expect(yanked.yanked?.reason).toBe('crashes on ARM')
    expect(yanked.channels).toEqual({ stable: '1.0.0', beta: '1.2.0-rc.1' })
    expect(yanked.channelsWithoutHead).toEqual([])
    const index = await indexOf('bad')
    expect(index.channels).toEqual({ stable: '1.0.0', beta: '1.2.0-rc.1' })
    expect(index.versions.find((v) => v.version === '1.1.0')?.yanked?.reason).toBe('crashes on ARM')

    // Plans by channel lead to the new head; devices on 1.1.0 can still fetch it and its manifest.
    expect(await (await planFor('bad', null, 'stable')).json()).toMatchObject({ to: '1.0.0' })
    const blob = await call('/v1/artifacts/bad/1.1.0/blob')
    expect(await sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(await sha256(body))
    expect((await call('/v1/artifacts/bad/1.1.0/manifest')).status).toBe(200)

    // A fix moves the head up as usual; restoring 1.1.0 does not move it back below the fix.
    await publish('bad', '1.1.1', 4)
    expect((await indexOf('bad')).channels.stable).toBe('1.1.1')
    const restored = await result(await yank('bad', '1.1.0', null))
    expect(restored.yanked).toBeNull()
    expect(restored.channels).toEqual({ stable: '1.1.1', beta: '1.2.0-rc.1' })
  })

  it('leaves a channel without a head when every version in it is yanked', async () => {
    await publish('allbad', '1.0.0', 1)
    const emptied = await result(await yank('allbad', '1.0.0', 'wrong build'))
    expect(emptied.channels).toEqual({})
    expect(emptied.channelsWithoutHead).toEqual(['stable'])
    const plan = await planFor('allbad', null, 'stable')
    expect(plan.status).toBe(404)
    // Publishing the next version gives the channel a head again.
    await publish('allbad', '1.0.1', 2)
    expect((await indexOf('allbad')).channels).toEqual({ stable: '1.0.1' })
  })

  it('a second yank before retention runs again passes over a version whose blob retention deleted', async () => {
    await publish('twice', '1.1.0', 1)
    await publish('twice', '1.2.0', 2)
    await publish('twice', '1.3.0', 3)
    // A backport: newest by serial, so retention keeps its blob, below the head.
    await publish('twice', '1.0.0', 4)
    const preferred = RuntimeConfig.parse({ delta: { storage: 'deltas-preferred', keepFullVersions: 2 } })
    // Kept: 1.0.0 and 1.3.0 (newest two), 1.3.0 the head, 1.2.0 what a yank of the head falls back to.
    const pruned = await pruneStorage(env.ARTIFACTS, preferred, Date.now())
    expect(pruned.blobsDeleted.filter((key) => key.includes('/twice/'))).toEqual([
      keys.blob('twice', '1.1.0'),
    ])

    const first = await result(await yank('twice', '1.3.0', 'bad build'))
    expect(first.channels.stable).toBe('1.2.0')
    expect(first.headsPassedOver).toEqual({})
    // No retention pass in between: 1.1.0, the next one down, has no blob to install or retreat to.
    const second = await result(await yank('twice', '1.2.0', 'same bug'))
    expect(second.channels.stable).toBe('1.0.0')
    expect(second.headsPassedOver).toEqual({ stable: ['1.1.0'] })
    expect((await indexOf('twice')).channels.stable).toBe('1.0.0')
    expect(await (await planFor('twice', null, 'stable')).json()).toMatchObject({ to: '1.0.0' })
    expect((await call('/v1/artifacts/twice/1.0.0/blob')).status).toBe(200)

    // A restore moves heads by the same rule: 1.2.0 (its blob kept) is the head again.
    const restored = await result(await yank('twice', '1.2.0', null))
    expect(restored.channels.stable).toBe('1.2.0')
    expect(restored.headsPassedOver).toEqual({})
  })

  it('retention keeps what a head left below a passed-over version falls back to', async () => {
    await publish('below', '1.1.0', 1)
    await publish('below', '1.2.0', 2)
    await publish('below', '1.3.0', 3)
    // Two backports, newest by serial: kept by keepFullVersions in the first pass.
    await publish('below', '0.9.0', 4)
    await publish('below', '1.0.0', 5)
    const keepThree = RuntimeConfig.parse({ delta: { storage: 'deltas-preferred', keepFullVersions: 3 } })
    const first = await pruneStorage(env.ARTIFACTS, keepThree, Date.now())
    expect(first.blobsDeleted.filter((key) => key.includes('/below/'))).toEqual([keys.blob('below', '1.1.0')])
    await result(await yank('below', '1.3.0', 'bad build'))
    const second = await result(await yank('below', '1.2.0', 'same bug'))
    // The head is now below 1.1.0, which is not yanked but has no blob.
    expect(second.channels.stable).toBe('1.0.0')
    expect(second.headsPassedOver).toEqual({ stable: ['1.1.0'] })

    // A pass that keeps fewer: what a yank of 1.0.0 falls back to is 0.9.0 (1.1.0 is passed over), so
    // its blob stays.
    const keepOne = RuntimeConfig.parse({ delta: { storage: 'deltas-preferred', keepFullVersions: 1 } })
    const again = await pruneStorage(env.ARTIFACTS, keepOne, Date.now())
    expect(again.blobsDeleted.filter((key) => key.includes('/below/'))).not.toContain(
      keys.blob('below', '0.9.0'),
    )
    const third = await result(await yank('below', '1.0.0', 'also bad'))
    expect(third.channels.stable).toBe('0.9.0')
    expect((await call('/v1/artifacts/below/0.9.0/blob')).status).toBe(200)
  })

  it('aborts a rollout of the yanked version, and only of that version', async () => {
    await publish('rolled', '1.0.0', 1)
    await publish('rolled', '2.0.0', 2)
    const stages = [
      { percent: 10, durationMs: HOUR },
      { percent: 100, durationMs: HOUR },
    ]
    expect((await startRollout('rolled', { version: '2.0.0', stages })).status).toBe(201)
    const yanked = await result(await yank('rolled', '1.0.0', 'old and broken'))
    expect(yanked.rolloutsAborted).toEqual([])
    expect(await rolloutOf('rolled')).toMatchObject({ state: 'running' })
    const pulled = await result(await yank('rolled', '2.0.0', 'data loss'))
    expect(pulled.rolloutsAborted).toEqual(['stable'])
    const status = await rolloutOf('rolled')
    expect(status.state).toBe('aborted')
    expect(JSON.stringify(status.history)).toContain('yanked: data loss')
  })

  it('refuses a rollout start that read the index before a yank of its version landed', async () => {
    await publish('racing', '1.0.0', 1)
    await publish('racing', '2.0.0', 2)
    const stages = [{ percent: 100, durationMs: HOUR }]
    // The start route read the index before the yank (2.0.0 not yanked yet); the yank then finds no
    // rollout to abort; the start reaches the coordinator last.
    expect((await result(await yank('racing', '2.0.0', 'data loss'))).rolloutsAborted).toEqual([])
    const late = await coordinatorStub('racing').start({
      name: 'racing',
      channel: 'stable',
      spec: { version: '2.0.0', stages },
    })
    expect(late).toMatchObject({ ok: false, status: 409 })
    expect(late.ok ? '' : late.detail).toContain('yanked while this start was on its way (yanked: data loss)')
    expect((await statusOf('racing')).status).toBe(404)
    // Restored, it may be rolled out again.
    await result(await yank('racing', '2.0.0', null))
    expect((await startRollout('racing', { version: '2.0.0', stages })).status).toBe(201)
  })

  it('a yank and a restore racing each other leave the coordinator agreeing with the index', async () => {
    await publish('flip', '1.0.0', 1)
    await publish('flip', '2.0.0', 2)
    const stages = [{ percent: 100, durationMs: HOUR }]
    // A yank writes the index, then a restore writes it and tells the coordinator first; the yank's
    // own call reaches the coordinator last, carrying the index revision its write produced.
    const yankedIndex = await setYanked(env.ARTIFACTS, 'flip', '2.0.0', {
      at: new Date().toISOString(),
      reason: 'false alarm',
    })
    const yankRevision = versionEntry(yankedIndex, '2.0.0')?.yankRevision ?? 0
    const restored = await result(await yank('flip', '2.0.0', null))
    expect(restored.yanked).toBeNull()
    expect(versionEntry(await indexOf('flip'), '2.0.0')?.yankRevision).toBeGreaterThan(yankRevision)
    expect(await coordinatorStub('flip').abortVersion('2.0.0', 'yanked: false alarm', yankRevision)).toBe(
      false,
    )
    // The index says restored, so the version may be rolled out (no stale "yanked" mark refuses it).
    const start = await startRollout('flip', { version: '2.0.0', stages })
    expect(start.status, await start.clone().text()).toBe(201)

    // The other order: the restore's call lands after a later yank's; the later yank still holds, and
    // a late restore does not take back the abort of a rollout the yank stopped.
    const restoredIndex = await setYanked(env.ARTIFACTS, 'flip', '2.0.0', null)
    const restoreRevision = versionEntry(restoredIndex, '2.0.0')?.yankRevision ?? 0
    expect((await result(await yank('flip', '2.0.0', 'real this time'))).rolloutsAborted).toEqual(['stable'])
    await coordinatorStub('flip').restoreVersion('2.0.0', restoreRevision)
    const late = await coordinatorStub('flip').start({
      name: 'flip',
      channel: 'stable',
      spec: { version: '2.0.0', stages },
    })
    expect(late).toMatchObject({ ok: false, status: 409 })
    expect(late.ok ? '' : late.detail).toContain('yanked: real this time')
  })

  it('needs the maintainer token, a published version and a reason', async () => {
    await publish('guarded', '1.0.0', 1)
    const problem = async (response: Response, status: number) => {
      expect(response.status).toBe(status)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      return ProblemDetails.parse(await response.json())
    }
    await problem(await yank('guarded', '1.0.0', 'x', {}), 401)
    await problem(await yank('guarded', '1.0.0', null, { authorization: 'Bearer nope' }), 401)
    expect((await problem(await yank('guarded', '9.9.9', 'x'), 404)).detail).toContain('not published')
    await problem(await yank('guarded', '1.0.0', '   '), 400)
    await problem(await yank('guarded', '1.0.0', 'x'.repeat(501)), 400)
    const notJson = await call('/v1/publish/guarded/1.0.0/yank', { method: 'PUT', headers: auth, body: '{' })
    await problem(notJson, 400)
    expect((await indexOf('guarded')).channels).toEqual({ stable: '1.0.0' })
  })

  it('with yank.requireStatement, refuses unsigned yanks and restores before changing anything', async () => {
    await publish('strict', '1.0.0', 1)
    await publish('strict', '1.1.0', 2)
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ yank: { requireStatement: true } }))
    clearRuntimeConfigCache()
    try {
      for (const response of [
        await yank('strict', '1.1.0', 'token only'),
        await yank('strict', '1.1.0', null),
      ]) {
        expect(response.status).toBe(422)
        const problem = ProblemDetails.parse(await response.json())
        expect(problem.type).toBe('https://deltaport.dev/problems/untrusted-signature')
        expect(problem.detail).toContain('yank.requireStatement')
      }
      const index = await indexOf('strict')
      expect(versionEntry(index, '1.1.0')?.yanked).toBeUndefined()
      expect(index.channels.stable).toBe('1.1.0')
    } finally {
      await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
      clearRuntimeConfigCache()
    }
    // Off (the default), the token alone still yanks: the quick response when no key is at hand.
    expect(await result(await yank('strict', '1.1.0', 'token only'))).toMatchObject({ signed: false })
  })

  it('keeps a signed statement that says what the request does, and refuses one that does not', async () => {
    const body = await publish('signed', '1.0.0', 1)
    await publish('signed', '1.1.0', 2)
    const hash = await sha256(body)
    const at = new Date().toISOString()
    const expires = new Date(Date.now() + 86_400_000).toISOString()
    // The edge holds no trusted keys: agents verify the signature; it checks only what is said.
    const statement = (said: Partial<YankStatement> = {}) => ({
      signed: {
        _type: 'deltaport/yank',
        name: 'signed',
        version: '1.0.0',
        sha256: hash,
        yanked: true,
        reason: 'leaks memory',
        at,
        expires,
        ...said,
      },
      signatures: [{ keyid: 'a'.repeat(64), sig: btoa('s'.repeat(64)) }],
    })
    const put = (reason: string, said?: Partial<YankStatement>) =>
      call('/v1/publish/signed/1.0.0/yank', {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ reason, statement: statement(said) }),
      })
    const refused = [
      await put('leaks memory', { version: '1.1.0' }),
      await put('leaks memory', { name: 'other' }),
      await put('leaks memory', { sha256: 'b'.repeat(64) }),
      await put('leaks memory', { yanked: false }),
      await put('something else'),
      await put('leaks memory', { expires: new Date(Date.now() - 1000).toISOString() }),
      await put('leaks memory', { at: '2098-01-01T00:00:00Z', expires: '2099-01-01T00:00:00Z' }),
    ]
    for (const response of refused) {
      expect(response.status).toBe(422)
      const problem = ProblemDetails.parse(await response.json())
      expect(problem.detail).toContain('does not fit')
      expect(problem.title).toBe('The signed statement does not fit the request')
    }
    // What was signed is kept as signed: a padded reason is not trimmed (the signature would break),
    // an unknown field is not dropped; both are refused by name.
    for (const said of [{ reason: ' leaks memory ' }, { comment: 'x' }] as Partial<YankStatement>[]) {
      const response = await put('leaks memory', said)
      expect(response.status).toBe(400)
      expect(JSON.stringify(await response.json())).toMatch(/whitespace|comment/)
    }
    expect(versionEntry(await indexOf('signed'), '1.0.0')?.yanked).toBeUndefined()

    const yanked = await result(await put('leaks memory'))
    expect(yanked).toMatchObject({ signed: true, yanked: { reason: 'leaks memory', at } })
    expect(versionEntry(await indexOf('signed'), '1.0.0')?.yankStatement).toEqual(statement())

    // A signed restore replaces it (devices then ignore the older yank); an unsigned one drops it.
    const restore = statement({ yanked: false, reason: null, at: new Date(Date.now() + 1000).toISOString() })
    const restored = await result(
      await call('/v1/publish/signed/1.0.0/yank', {
        method: 'DELETE',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ statement: restore }),
      }),
    )
    expect(restored).toMatchObject({ signed: true, yanked: null })
    expect(versionEntry(await indexOf('signed'), '1.0.0')?.yankStatement).toEqual(restore)
    expect(await result(await yank('signed', '1.0.0', 'unsigned this time'))).toMatchObject({ signed: false })
    expect(versionEntry(await indexOf('signed'), '1.0.0')?.yankStatement).toBeUndefined()
    const wrongRestore = await call('/v1/publish/signed/1.0.0/yank', {
      method: 'DELETE',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ statement: statement() }),
    })
    expect(wrongRestore.status).toBe(422)
  })
})
