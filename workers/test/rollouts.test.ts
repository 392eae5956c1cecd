import { describe, expect, it } from 'vitest'
import {
  checkClient,
  clientsBetween,
  control,
  HOUR,
  reportOutcome,
  rolloutPath,
  startRollout,
  statusOf,
} from '../../durable-objects/test/rollout-helpers.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { RolloutCheck, RolloutStatus } from '../../schemas/rollout.ts'
import { auth, bytesOf, call, envelopeFor, publishSingle, startPublish } from './publish-helpers.ts'

const ONE_STAGE = { version: '1.0.0', stages: [{ percent: 100, durationMs: HOUR }] }

async function expectProblem(res: Response, status: number): Promise<ProblemDetails> {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toBe('application/problem+json')
  return ProblemDetails.parse(await res.json())
}

describe('/v1/rollouts auth', () => {
  it('needs the maintainer token for start, pause, resume, abort and status', async () => {
    const path = rolloutPath('ro-auth')
    const noToken = await call(`${path}/start`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(ONE_STAGE),
    })
    expect((await expectProblem(noToken, 401)).type).toContain('unauthorized')
    expect(noToken.headers.get('www-authenticate')).toContain('Bearer')
    const wrong = { authorization: 'Bearer not-the-token' }
    for (const action of ['pause', 'resume', 'abort']) {
      await expectProblem(await call(`${path}/${action}`, { method: 'POST', headers: wrong }), 401)
    }
    await expectProblem(await call(`${path}/status`), 401)
    // The agent side is public.
    await expectProblem(await checkClient('ro-auth', 'client-public-1'), 404)
  })
})

describe('/v1/rollouts validation', () => {
  it('answers 404 for an unknown rollout and for an unpublished version', async () => {
    expect((await expectProblem(await statusOf('ro-none'), 404)).detail).toContain('no rollout')
    await expectProblem(await control('ro-none', 'pause'), 404)
    await expectProblem(await control('ro-none', 'resume'), 404)
    await expectProblem(await control('ro-none', 'abort'), 404)
    await expectProblem(
      await reportOutcome('ro-none', { client: 'client-0001', version: '1.0.0', outcome: 'installed' }),
      404,
    )
    const unpublished = await expectProblem(await startRollout('ro-none', ONE_STAGE), 404)
    expect(unpublished.detail).toContain('ro-none@1.0.0 is not published')
  })

  it('refuses a channel the artifact does not have (a typo would roll out to nobody)', async () => {
    await publishSingle('ro-chan', '1.0.0', bytesOf(40, 9))
    const typo = await expectProblem(await startRollout('ro-chan', ONE_STAGE, 'stabel'), 422)
    expect(typo.detail).toBe('ro-chan has no channel "stabel" (channels: stable)')
    expect((await startRollout('ro-chan', ONE_STAGE, 'stable')).status).toBe(201)
  })

  it('refuses a version on a channel its signed manifest does not list (devices would refuse it)', async () => {
    await publishSingle('ro-signed', '1.0.0', bytesOf(40, 10))
    await publishSingle('ro-signed', '1.1.0', bytesOf(40, 11), 2, { channels: ['beta'] })
    const spec = { ...ONE_STAGE, version: '1.1.0' }
    const unsigned = await expectProblem(await startRollout('ro-signed', spec, 'stable'), 422)
    expect(unsigned.detail).toBe(
      'ro-signed@1.1.0 was not published to channel "stable" (its signed manifest lists: beta); devices would refuse it',
    )
    expect((await startRollout('ro-signed', spec, 'beta')).status).toBe(201)
  })

  it('refuses a yanked version, and one signed before the channel head (devices would refuse both)', async () => {
    await publishSingle('ro-old', '1.0.0', bytesOf(40, 12))
    await publishSingle('ro-old', '2.0.0', bytesOf(40, 13), 2)
    const older = await expectProblem(await startRollout('ro-old', ONE_STAGE, 'stable'), 422)
    expect(older.detail).toContain(
      'ro-old@1.0.0 (serial 1) was signed before the "stable" head 2.0.0 (serial 2); devices running the head refuse it as a rollback',
    )
    const yank = await call('/v1/publish/ro-old/2.0.0/yank', {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'bad build' }),
    })
    expect(yank.status).toBe(200)
    const spec = { ...ONE_STAGE, version: '2.0.0' }
    const yanked = await expectProblem(await startRollout('ro-old', spec, 'stable'), 422)
    expect(yanked.detail).toContain('ro-old@2.0.0 is yanked (bad build); devices refuse it')
    // With 2.0.0 yanked the head is 1.0.0 again, which may be rolled out.
    expect((await startRollout('ro-old', ONE_STAGE, 'stable')).status).toBe(201)
  })

  it('refuses a version below the channel head even with a higher serial (a backport would downgrade devices)', async () => {
    await publishSingle('ro-back', '4.17.21', bytesOf(40, 14))
    // The backport: published after the head (higher serial), so the head stays on 4.17.21.
    await publishSingle('ro-back', '4.17.15', bytesOf(40, 15), 2)
    const spec = { ...ONE_STAGE, version: '4.17.15' }
    const backport = await expectProblem(await startRollout('ro-back', spec, 'stable'), 422)
    expect(backport.detail).toContain(
      'ro-back@4.17.15 is older than the "stable" head 4.17.21: devices running the head would be moved down to it',
    )
    // The head itself may be rolled out, and so may a newer version.
    expect((await startRollout('ro-back', { ...ONE_STAGE, version: '4.17.21' }, 'stable')).status).toBe(201)
  })

  it('refuses hostile specs, params, queries and outcomes as 4xx problem+json', async () => {
    await publishSingle('ro-valid', '1.0.0', bytesOf(50, 7))
    const bad = [
      { ...ONE_STAGE, stages: [] },
      {
        ...ONE_STAGE,
        stages: [
          { percent: 50, durationMs: HOUR },
          { percent: 10, durationMs: HOUR },
        ],
      },
      { ...ONE_STAGE, stages: [{ percent: 150, durationMs: HOUR }] },
      { ...ONE_STAGE, stages: [{ percent: 10, durationMs: HOUR }] },
      { ...ONE_STAGE, stages: [{ percent: 100, durationMs: 5 }] },
      { ...ONE_STAGE, version: 'latest' },
      { ...ONE_STAGE, maxFailureRate: 2 },
      { ...ONE_STAGE, minSample: 1 },
      { ...ONE_STAGE, startAt: 'tomorrow' },
      { ...ONE_STAGE, stages: Array.from({ length: 40 }, (_, i) => ({ percent: i + 1, durationMs: HOUR })) },
    ]
    for (const spec of bad) {
      const problem = await expectProblem(await startRollout('ro-valid', spec), 400)
      expect(problem.errors?.length).toBeGreaterThan(0)
    }
    await expectProblem(await startRollout('ro-valid', '{"version":'), 400)
    await expectProblem(await startRollout('ro-valid', `{"pad":"${'x'.repeat(20_000)}"}`), 413)
    const far = new Date(Date.now() + 400 * 24 * HOUR).toISOString()
    await expectProblem(await startRollout('ro-valid', { ...ONE_STAGE, startAt: far }), 422)
    await expectProblem(await call('/v1/rollouts/Not_A_Name/stable?client=client-0001'), 400)
    await expectProblem(await call('/v1/rollouts/ro-valid/Stable!?client=client-0001'), 400)
    await expectProblem(await call('/v1/rollouts/ro-valid/stable'), 400)
    await expectProblem(await checkClient('ro-valid', 'x'), 400)
    await expectProblem(await checkClient('ro-valid', 'a/../../etc'), 400)

    expect((await startRollout('ro-valid', ONE_STAGE)).status).toBe(201)
    expect((await expectProblem(await startRollout('ro-valid', ONE_STAGE), 409)).detail).toContain(
      'abort it first',
    )
    const [client] = clientsBetween('ro-valid', '1.0.0', 0, 1)
    for (const body of [
      { client, version: '1.0.0', outcome: 'exploded' },
      { client, version: '1.0.0', outcome: 'failed', errorClass: 'Stack trace: at foo()' },
      { client: 'no', version: '1.0.0', outcome: 'installed' },
      { version: '1.0.0', outcome: 'installed' },
      'not json',
    ]) {
      await expectProblem(await reportOutcome('ro-valid', body), 400)
    }
    const huge = await reportOutcome('ro-valid', {
      client,
      version: '1.0.0',
      outcome: 'failed',
      pad: 'x'.repeat(20_000),
    })
    await expectProblem(huge, 413)
    await expectProblem(await reportOutcome('ro-valid', { client, version: '2.0.0', outcome: 'failed' }), 409)
  })

  it('serves scoped names as one segment and the check is never cached', async () => {
    const body = bytesOf(50, 8)
    await startPublish(await envelopeFor('@acme/ro-scoped', '1.0.0', body, { channels: ['stable', 'beta'] }))
    const put = await call('/v1/publish/%40acme%2Fro-scoped/1.0.0/blob', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(body.length) },
      body,
    })
    expect(put.status).toBe(201)
    const started = await startRollout('@acme/ro-scoped', ONE_STAGE, 'beta')
    expect(started.status).toBe(201)
    expect(RolloutStatus.parse(await started.json())).toMatchObject({
      name: '@acme/ro-scoped',
      channel: 'beta',
    })
    const res = await checkClient('@acme/ro-scoped', 'client-scoped-1', 'beta')
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(RolloutCheck.parse(await res.json())).toMatchObject({
      in: true,
      version: '1.0.0',
      channel: 'beta',
    })
    // Another channel of the same artifact is another coordinator.
    await expectProblem(await checkClient('@acme/ro-scoped', 'client-scoped-1', 'stable'), 404)
    const status = await call(rolloutPath('@acme/ro-scoped', 'beta', '/status'), { headers: auth })
    expect(status.status).toBe(200)
  })
})
