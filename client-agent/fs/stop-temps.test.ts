import { mkdtemp, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { openTempFor, stopRemovingTemps } from './atomic.ts'

// Its own file: a stop is for the rest of the process (module state), as in the CLI.
it('a stop signal while the output temp is being opened removes that temp once the open returns, then exits', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-stop-'))
  const exits: number[] = []
  // What `delta make` does once its in-memory make returns: open the output's temp. A SIGINT that
  // arrived during the make is handled now, in the same turn as this open (its stat, or its open in the
  // thread pool, which creates the file before the agent hears of it).
  const opening = openTempFor(join(dir, 'out'))
  stopRemovingTemps(130, (code) => exits.push(code))
  // Exiting now left the temp the open was about to create: `.out.<hex>.tmp` outlived the command.
  expect(exits).toEqual([])
  await expect(opening).rejects.toThrow(/stopped by a signal before .*out was written/)
  expect(exits).toEqual([130])
  expect(await readdir(dir)).toEqual([])
})
