import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { buildSampleService } from '../../sample-service/build.ts'
import { ArtifactStore } from '../../store.ts'
import { TEST_TOKEN, useEdgeWorkspace } from '../../test/local-edge.ts'
import { RunFiles } from '../run-files.ts'
import { freePort, sleep } from '../service-process.ts'
import { within } from './harness.ts'

const exec = promisify(execFile)
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'deltaport.ts')
const NAME = 'single-svc'
const setup = useEdgeWorkspace()

/** `deltaport run` as a real child process (text output), serving NAME on `port`. */
function startAgent(port: number) {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--no-warnings',
      BIN,
      '--config',
      setup.ws.configFile,
      'run',
      NAME,
      '--port',
      String(port),
      '--interval',
      '0',
      '--',
      process.execPath,
      '--no-warnings',
      '{artifact}',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (c: Buffer) => {
    stdout += c.toString()
  })
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString()
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, exited, stdout: () => stdout, stderr: () => stderr }
}

describe('deltaport run: one per artifact', () => {
  it('refuses a second run of a served artifact (busy, naming the first) and leaves the first one serving', async () => {
    const file = await buildSampleService(join(setup.ws.dir, `${NAME}-1.0.0.js`), { version: '1.0.0' })
    await exec(
      process.execPath,
      [BIN, '--config', setup.ws.configFile, 'publish', file, '--name', NAME, '--version', '1.0.0'],
      { env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN } },
    )
    const runFiles = new RunFiles(join(new ArtifactStore(setup.ws.config.installRoot, NAME).dir, 'run'))
    const port = await freePort()
    const first = startAgent(port)
    try {
      const deadline = Date.now() + 40_000
      while (!first.stdout().includes('serving 1.0.0')) {
        if (Date.now() > deadline) throw new Error(`the first run never served\n${first.stderr()}`)
        await sleep(100)
      }
      const served = await runFiles.livePids()
      expect(served).toHaveLength(1)
      // The second run, started while the first serves, is refused before it touches the first one's
      // run files: before, it reaped the first one's service (SIGKILL: rolled back as a crash) and served.
      const late = startAgent(await freePort())
      try {
        expect(await within(late.exited, 30_000, 'the second run to exit')).toBe(11)
        expect(late.stderr()).toContain(`another \`deltaport run\` already serves ${NAME}`)
        expect(late.stderr()).toMatch(/pid \d+ \(deltaport .*\brun single-svc\b/)
      } finally {
        // Only when the test failed is it still running (and serving): stopped, not killed, so its
        // service does not outlive it.
        late.child.kill('SIGTERM')
        await late.exited
      }
      expect(await runFiles.livePids()).toEqual(served)
      const health = await fetch(`http://127.0.0.1:${port}/health`)
      expect(await health.json()).toEqual({ version: '1.0.0' })
      expect(first.stdout()).not.toContain('rolling back')
    } finally {
      first.child.kill('SIGTERM')
      await first.exited
    }
    // Stopped, the first run lets go: the artifact may be served again.
    const again = startAgent(port)
    try {
      const deadline = Date.now() + 40_000
      while (!again.stdout().includes('serving 1.0.0')) {
        if (Date.now() > deadline) throw new Error(`the run after the first never served\n${again.stderr()}`)
        await sleep(100)
      }
    } finally {
      again.child.kill('SIGTERM')
      expect(await again.exited).toBe(0)
    }
  }, 120_000)
})
