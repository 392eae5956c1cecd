import { spawn } from 'node:child_process'
import { join } from 'node:path'

/** The limit `fileSizeLimited` sets (`ulimit -f 128`: 128 blocks of 512 bytes). */
export const FILE_SIZE_LIMIT_BYTES = 65_536

/**
 * Runs the journal test child `script` (beside this file) with `args` in its own Node process, and
 * resolves with its exit code and what it printed on stdout (the child's report, one JSON document).
 * `exposeGc`: the child measures its memory after forcing collections. `fileSizeLimited`: under a 64 KiB
 * file size limit, so its writes to the journal are cut short by the kernel for real (write(2) returns
 * what fit; Node ignores SIGXFSZ).
 */
export async function runJournalChild(
  script: string,
  args: string[],
  options: { exposeGc?: boolean; fileSizeLimited?: boolean } = {},
): Promise<{ code: number | null; out: string }> {
  const node = [
    '--no-warnings',
    ...(options.exposeGc ? ['--expose-gc'] : []),
    join(import.meta.dirname, script),
    ...args,
  ]
  const child = options.fileSizeLimited
    ? spawn('sh', ['-c', 'ulimit -S -f 128 && exec "$0" "$@"', process.execPath, ...node], {
        stdio: ['ignore', 'pipe', 'inherit'],
      })
    : spawn(process.execPath, node, { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString()
  })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { code, out }
}
