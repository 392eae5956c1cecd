import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings, type SwapSettingsInput } from '../../../schemas/swap.ts'
import { Supervisor, type SupervisorEvent } from '../supervisor.ts'
import { cleanup, harness, tempDir, waitFor, within } from './harness.ts'

/**
 * A new version that dies during its probation, while the old one still runs: reads must not fail. They
 * go back to the old process as soon as the death is seen, and a read the dying process got but never
 * answered is sent to the old one once. A request that may have had an effect is never sent twice.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop()
  await cleanup()
})

describe('buffered swap: reads when the new version dies during probation', () => {
  it('answers every read under load while the new version crashes and the swap rolls back', async () => {
    // v2 passes its health check, then exits 1 s after it started listening: well inside its probation.
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', crashAfterMs: 1000 }], {
      probationMs: 5000,
    })
    let stop = false
    const failures: string[] = []
    const versions = new Set<string>()
    const readers = Array.from({ length: 8 }, async () => {
      while (!stop) {
        try {
          const answer = await fetch(`${h.url}/state?client=reader`)
          const text = await answer.text()
          if (answer.status !== 200) failures.push(`${answer.status} ${text.trim()}`)
          else versions.add((JSON.parse(text) as { version: string }).version)
        } catch (error) {
          failures.push(String((error as Error).cause ?? error))
        }
      }
    })
    try {
      const report = await within(h.swapTo('2.0.0'), 60_000, 'the swap')
      expect(report).toMatchObject({ outcome: 'rolled-back', errorClass: 'replay', serving: '1.0.0' })
    } finally {
      stop = true
      await Promise.all(readers)
    }
    // The test means something only if reads did reach the new version before it died.
    expect(h.events.some((e) => e.type === 'switched')).toBe(true)
    expect([...versions].sort()).toEqual(['1.0.0', '2.0.0'])
    expect(failures).toEqual([])
  })

  it('sends a GET the dying new version never answered to the old one, once', async () => {
    const { port, hits, swapped } = await withDyingNewVersion({})
    const answer = await within(fetch(`http://127.0.0.1:${port}/die`), 20_000, 'GET /die')
    expect(answer.status).toBe(200)
    expect(await answer.json()).toMatchObject({ version: '1.0.0' })
    expect((await swapped).outcome).toBe('rolled-back')
    // Reached the new version (which died of it) and then the old one: nothing else saw it.
    expect(await hits()).toEqual(['2.0.0 GET /die', '1.0.0 GET /die'])
  })

  it('does not send a request that may have had an effect twice: it fails with 502', async () => {
    // POST is not held here, so it goes live to the new version, which dies of it.
    const { port, hits, swapped } = await withDyingNewVersion({ writeMethods: ['PUT'] })
    const answer = await within(fetch(`http://127.0.0.1:${port}/die`, { method: 'POST' }), 20_000, 'POST')
    expect(answer.status).toBe(502)
    expect((await swapped).outcome).toBe('rolled-back')
    expect(await hits()).toEqual(['2.0.0 POST /die'])
  })
})

/**
 * A supervisor swapped to a 2.0.0 that exits, without answering, when it gets /die; the call returns once
 * 2.0.0 serves (its probation is long, so it is still on). Every request a version handles is logged.
 */
async function withDyingNewVersion(input: SwapSettingsInput) {
  const dir = await tempDir('deltaport-swap-probation-')
  const dataDir = join(dir, 'data')
  const service = async (version: string, dies: boolean) => {
    const file = join(dir, `svc-${version}.mjs`)
    await writeFile(
      file,
      `import { appendFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
const version = ${JSON.stringify(version)}
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    if (req.url === '/die') appendFileSync(join(process.env.DELTAPORT_DATA_DIR, 'hits.log'), version + ' ' + req.method + ' /die\\n')
    if (${dies} && req.url === '/die') process.exit(1)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ version }))
  })
})
process.on('SIGTERM', () => process.exit(0))
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
    )
    return file
  }
  const events: SupervisorEvent[] = []
  const supervisor = await Supervisor.start({
    command: [process.execPath, '{artifact}'],
    runDir: join(dir, 'run'),
    dataDir,
    settings: SwapSettings.parse({
      prepare: { kind: 'none' },
      flush: { kind: 'none' },
      probationMs: 30_000,
      ...input,
    }),
    initial: { version: '1.0.0', artifactPath: await service('1.0.0', false) },
    host: '127.0.0.1',
    port: 0,
    stdio: 'ignore',
    onEvent: (e) => events.push(e),
  })
  supervisors.push(supervisor)
  const swapped = supervisor.swapTo({ version: '2.0.0', artifactPath: await service('2.0.0', true) })
  await waitFor(() => events.some((e) => e.type === 'switched'), 20_000)
  const hits = async () =>
    (await readFile(join(dataDir, 'hits.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean)
  return { port: supervisor.publicPort, hits, swapped }
}
