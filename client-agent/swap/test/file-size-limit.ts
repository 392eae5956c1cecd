import { spawn } from 'node:child_process'
import { join } from 'node:path'

/** The limit `ulimit -f 128` sets: 128 blocks of 512 bytes. */
export const FILE_SIZE_LIMIT_BYTES = 65_536

/**
 * Runs the test child `script` (beside this file) on `path` under a 64 KiB file size limit, so its
 * writes to the journal are cut short by the kernel for real (write(2) returns what fit; SIGXFSZ is
 * ignored by Node). Resolves with its exit code and what it printed on stdout.
 */
export async function runUnderFileSizeLimit(
  script: string,
  path: string,
): Promise<{ code: number | null; out: string }> {
  const child = spawn(
    'sh',
    [
      '-c',
      'ulimit -S -f 128 && exec "$0" --no-warnings "$1" "$2"',
      process.execPath,
      join(import.meta.dirname, script),
      path,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString()
  })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { code, out }
}
