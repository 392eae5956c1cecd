/**
 * Signed rollout control (ADR 0038): start, pause, resume and abort on a maintainer-signed statement
 * whose `request` text is the body acted on; with runtime config `rollout.requireStatement` the token
 * alone no longer steers a rollout, and each statement is taken once. Real Ed25519 keys in workerd; the
 * edge under test is the app with MAINTAINER_KEYS set.
 */
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it } from 'vitest'
import { HOUR, rolloutPath } from '../../durable-objects/test/rollout-helpers.ts'
import { RolloutStatus } from '../../schemas/rollout.ts'
import type {
  RolloutControlAction,
  RolloutControlStatement,
} from '../../schemas/rollout-control-statement.ts'
import { app } from '../app.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import {
  auth,
  bytesOf,
  expectProblem,
  newTestKey,
  publishSingle,
  signedByAll,
  type TestKey,
} from './publish-helpers.ts'

const [maintainer, stranger] = await Promise.all([newTestKey(), newTestKey()])
const guarded: Env = { ...env, MAINTAINER_KEYS: maintainer.publicKey }

const SPEC = {
  version: '2.0.0',
  stages: [
    { percent: 10, durationMs: HOUR },
    { percent: 100, durationMs: HOUR },
  ],
}

async function requireStatements(on: boolean): Promise<void> {
  if (on) await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ rollout: { requireStatement: true } }))
  else await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
  clearRuntimeConfigCache()
}

afterEach(() => requireStatements(false))

/** Publishes 1.0.0 and 2.0.0 of `name` to stable (unguarded: publishing is not what is tested here). */
async function published(name: string): Promise<void> {
  await publishSingle(name, '1.0.0', bytesOf(900, 1), 1)
  await publishSingle(name, '2.0.0', bytesOf(900, 2), 2)
}

function statementFor(
  name: string,
  action: RolloutControlAction,
  request: unknown,
  said: Partial<RolloutControlStatement> = {},
): RolloutControlStatement {
  const at = new Date()
  return {
    _type: 'deltaport/rollout-control',
    name,
    channel: 'stable',
    action,
    request: JSON.stringify(request),
    at: at.toISOString(),
    expires: new Date(at.getTime() + HOUR).toISOString(),
    ...said,
  }
}

async function signed(statement: RolloutControlStatement, key: TestKey = maintainer) {
  return { statement: await signedByAll(statement, [key]) }
}

function send(name: string, action: RolloutControlAction, body?: unknown) {
  return app.request(
    rolloutPath(name, 'stable', `/${action}`),
    {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    },
    guarded,
  )
}

async function status(response: Response): Promise<RolloutStatus> {
  expect(response.status, await response.clone().text()).toBeLessThan(300)
  return RolloutStatus.parse(await response.json())
}

describe('signed rollout control', () => {
  it('acts on exactly the signed request and records that it was signed', async () => {
    await published('rc-signed')
    const start = statementFor('rc-signed', 'start', SPEC)
    const started = await status(await send('rc-signed', 'start', await signed(start)))
    expect(started).toMatchObject({ version: '2.0.0', state: 'running', currentPercent: 10 })
    expect(started.history.at(-1)).toMatchObject({ event: 'stage' })
    expect(started.history[0]).toMatchObject({ event: 'scheduled', signedAt: start.at })

    const pause = statementFor(
      'rc-signed',
      'pause',
      { reason: 'watching the crash rate' },
      {
        at: new Date(Date.now() + 1000).toISOString(),
      },
    )
    const paused = await status(await send('rc-signed', 'pause', await signed(pause)))
    expect(paused.state).toBe('paused')
    expect(paused.history.at(-1)).toMatchObject({
      event: 'paused',
      detail: 'watching the crash rate',
      signedAt: pause.at,
    })
  })

  it('refuses a statement that does not fit the request, is stale, or is signed by someone else', async () => {
    await published('rc-misfit')
    const refusals: Array<[Partial<RolloutControlStatement>, string]> = [
      [{ name: 'rc-other' }, 'rollout of rc-other'],
      [{ channel: 'beta' }, 'beta rollout'],
      [{ action: 'abort' }, 'says abort'],
      [{ expires: new Date(Date.now() - 1000).toISOString() }, 'expired'],
      [{ expires: new Date(Date.now() + 2 * 24 * HOUR).toISOString() }, 'more than a day'],
      [
        {
          at: new Date(Date.now() + 3 * HOUR).toISOString(),
          expires: new Date(Date.now() + 4 * HOUR).toISOString(),
        },
        'ahead of',
      ],
    ]
    for (const [said, expected] of refusals) {
      const response = await send(
        'rc-misfit',
        'start',
        await signed(statementFor('rc-misfit', 'start', SPEC, said)),
      )
      expect((await expectProblem(response, 422, 'invalid-statement')).detail).toContain(expected)
    }
    const forged = await send(
      'rc-misfit',
      'start',
      await signed(statementFor('rc-misfit', 'start', SPEC), stranger),
    )
    expect((await expectProblem(forged, 422, 'untrusted-signature')).detail).toContain(
      'the start statement for the stable rollout of rc-misfit',
    )
    // A statement that does not parse is refused by field, never taken as a plain body.
    const broken = await send('rc-misfit', 'start', { statement: { signed: {}, signatures: [] } })
    await expectProblem(broken, 400, 'bad-request')
    // The signed request is held to the action's schema like a plain body.
    const badSpec = statementFor('rc-misfit', 'start', {
      version: '2.0.0',
      stages: [{ percent: 50, durationMs: HOUR }],
    })
    await expectProblem(await send('rc-misfit', 'start', await signed(badSpec)), 400, 'bad-request')
    expect(
      (await app.request(rolloutPath('rc-misfit', 'stable', '/status'), { headers: auth }, guarded)).status,
    ).toBe(404)
  })

  it('takes each statement once: a replay, or an older one, is refused', async () => {
    await published('rc-replay')
    const start = statementFor('rc-replay', 'start', SPEC)
    await status(await send('rc-replay', 'start', await signed(start)))
    const later = (ms: number) => ({ at: new Date(Date.now() + ms).toISOString() })
    const pause = await signed(statementFor('rc-replay', 'pause', {}, later(1000)))
    const resume = await signed(statementFor('rc-replay', 'resume', {}, later(2000)))
    expect((await status(await send('rc-replay', 'pause', pause))).state).toBe('paused')
    expect((await status(await send('rc-replay', 'resume', resume))).state).toBe('running')
    // Whoever holds the token and saw the pause cannot pause the rollout again with it.
    const replayed = await send('rc-replay', 'pause', pause)
    expect((await expectProblem(replayed, 409, 'conflict')).detail).toContain('replay')
    // Nor replay the start once the rollout is over and a new one could begin.
    await status(
      await send('rc-replay', 'abort', await signed(statementFor('rc-replay', 'abort', {}, later(3000)))),
    )
    await expectProblem(await send('rc-replay', 'start', await signed(start)), 409, 'conflict')
    // A statement refused for the rollout's state is not spent: the maintainer's next one still works.
    const tooEarly = await signed(statementFor('rc-replay', 'resume', {}, later(4000)))
    await expectProblem(await send('rc-replay', 'resume', tooEarly), 409, 'conflict')
    const restart = await signed(statementFor('rc-replay', 'start', SPEC, later(5000)))
    expect((await status(await send('rc-replay', 'start', restart))).state).toBe('running')
  })

  it('with rollout.requireStatement, refuses the token alone for every action', async () => {
    await published('rc-strict')
    await requireStatements(true)
    for (const [action, body] of [
      ['start', SPEC],
      ['pause', {}],
      ['resume', undefined],
      ['abort', { reason: 'token only' }],
    ] as const) {
      const problem = await expectProblem(await send('rc-strict', action, body), 422, 'untrusted-signature')
      expect(problem.detail).toContain('rollout.requireStatement')
    }
    const start = await signed(statementFor('rc-strict', 'start', SPEC))
    expect((await status(await send('rc-strict', 'start', start))).state).toBe('running')
    // Outcome reports from devices and the status read are not control: no statement needed.
    expect(
      (await app.request(rolloutPath('rc-strict', 'stable', '/status'), { headers: auth }, guarded)).status,
    ).toBe(200)
    await requireStatements(false)
    // Off (the default), the token alone still pauses.
    expect((await status(await send('rc-strict', 'pause', {}))).state).toBe('paused')
  })
})
