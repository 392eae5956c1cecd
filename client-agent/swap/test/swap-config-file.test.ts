import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { jsonCli, makeWorkspace } from '../../test/fixtures.ts'

/**
 * `deltaport run --swap-config <file>` reads its settings before it asks the edge for anything, so a bad
 * file is refused on its own: no edge runs here (the workspace points at a closed port).
 */
describe('run --swap-config', () => {
  it('refuses a key the settings do not have, naming it (a typo would otherwise run on the default)', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const swapConfig = join(ws.dir, 'swap.json')
    // answerIdleTimeoutMs misspelt: silently dropped, the operator's 5 s would be the default 60 s.
    await writeFile(swapConfig, JSON.stringify({ answerIdleTimoutMs: 5000, restartHoldMs: 2000 }))
    const result = await jsonCli(ws.configFile, ['run', 'svc', '--swap-config', swapConfig, '--', 'true'])
    expect(result.code, result.stderr).toBe(3)
    expect(`${result.stdout}${result.stderr}`).toContain('answerIdleTimoutMs')
  })

  it('takes a file of known keys', async () => {
    const ws = await makeWorkspace('http://127.0.0.1:9')
    const swapConfig = join(ws.dir, 'swap.json')
    await writeFile(swapConfig, JSON.stringify({ answerIdleTimeoutMs: 5000, restartHoldMs: 2000 }))
    const result = await jsonCli(ws.configFile, ['run', 'svc', '--swap-config', swapConfig, '--', 'true'])
    // Past the settings, it asks the edge (closed port): cannot reach the edge, exit 4, not a config error.
    expect(result.code, result.stderr).toBe(4)
  })
})
