import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { beforeAll, describe, expect, it } from 'vitest'
import { decodeContainer, encodeContainer } from '../../delta/archive/container.ts'
import { createDelta } from '../../delta/index.ts'
import { CODEC_CEILING, deviceArchiveLimits } from '../codec/archive-budget.ts'
import { writeArtifact } from './fixtures.ts'

/**
 * `deltaport delta make|apply` handed the wrong files or hostile ones: each must end in a typed error
 * with its exit code, no stack trace, no crash, and no output file.
 */
const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
let dir: string

async function cli(args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: dir })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; signal: string | null; stdout: string; stderr: string }
    return { code: e.code, signal: e.signal, stdout: e.stdout, stderr: e.stderr }
  }
}

/** What is left in the folder besides what the test put there: no output, no temp. */
async function leftovers(expected: readonly string[]): Promise<string[]> {
  return (await readdir(dir)).filter((entry) => !expected.includes(entry))
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-hostile-'))
  const text = Array.from({ length: 40_000 }, (_, i) => `line ${i} ${(i * 7919) % 10007}\n`).join('')
  await writeFile(join(dir, 'a.gz'), gzipSync(text, { level: 9 }))
  await writeFile(
    join(dir, 'b.gz'),
    gzipSync(text.replace('line 20000 ', 'line 20000 changed '), { level: 9 }),
  )
  const made = await cli(['--json', 'delta', 'make', '--method', 'archive', 'a.gz', 'b.gz', 'ab.delta'])
  expect(JSON.parse(made.stdout).delta.method).toBe('archive')
}, 60_000)

describe('deltaport delta apply, archive delta against the wrong source', () => {
  it('a source over 2 GiB is refused as not the delta’s source, without reading it (no crash)', async () => {
    // Sparse: 3 GiB on paper, nothing on disk. Reading it whole is what used to abort Node.
    await truncate(join(dir, 'big.src'), 0).catch(() => writeFile(join(dir, 'big.src'), ''))
    await truncate(join(dir, 'big.src'), 3 * 2 ** 30)
    const applied = await cli(['delta', 'apply', 'big.src', 'ab.delta', 'out'])
    expect(applied.stderr).not.toContain('Assertion failed')
    expect(applied.code).toBe(8)
    expect(applied.stderr).toContain('source does not match the one this delta was made from')
    expect(await leftovers(['a.gz', 'b.gz', 'ab.delta', 'big.src'])).toEqual([])
  }, 60_000)

  it('a delta claiming a source bigger than the memory allowed is refused before the source is read', async () => {
    // A hostile (or mismatched) container naming the size of the file it will be applied to.
    const honest = decodeContainer(new Uint8Array(await readFile(join(dir, 'ab.delta'))), {
      maxTargetBytes: 2 ** 30,
      maxExpandedBytes: 2 ** 30,
    })
    const sourceSize = 200 * 2 ** 20
    await writeFile(join(dir, 'lying.delta'), encodeContainer({ ...honest, sourceLength: sourceSize }))
    await writeFile(join(dir, 'mid.src'), '')
    await truncate(join(dir, 'mid.src'), sourceSize)
    // 64 MiB leaves room for ≈5 MiB of expanded archive: a 200 MiB source archive cannot expand within it.
    const applied = await cli(['delta', 'apply', '--max-memory', '64', 'mid.src', 'lying.delta', 'out'])
    // Memory this machine (or --max-memory) has not is one exit code, 17, whichever check finds it.
    expect(applied.code).toBe(17)
    expect(applied.stderr).toContain('not enough memory to rebuild this archive here')
    expect(applied.stderr).toContain('source archive of 209715200 bytes')
    expect(await leftovers(['a.gz', 'b.gz', 'ab.delta', 'big.src', 'lying.delta', 'mid.src'])).toEqual([])
  }, 60_000)

  it('on a roomy host, an archive past the codec ceiling is said to be too big, not short of memory', async () => {
    const honest = decodeContainer(new Uint8Array(await readFile(join(dir, 'ab.delta'))), {
      maxTargetBytes: 2 ** 30,
      maxExpandedBytes: 2 ** 30,
    })
    // Over twice the ceiling: no archive of it could expand within 1 GiB (refused before it is read).
    const sourceSize = 2.5 * 2 ** 30
    await writeFile(join(dir, 'huge.delta'), encodeContainer({ ...honest, sourceLength: sourceSize }))
    await writeFile(join(dir, 'huge.src'), '')
    await truncate(join(dir, 'huge.src'), sourceSize)
    // 64 GiB allowed: the memory would fit 10 GiB of archive, the codec's 1 GiB ceiling binds first
    // (--max-memory only lowers what the machine has, so the ceiling binds here on a host with ≥ 6 GiB).
    const roomy = deviceArchiveLimits(64 * 1024 * 2 ** 20).maxExpandedBytes >= CODEC_CEILING
    const applied = await cli(['delta', 'apply', '--max-memory', '65536', 'huge.src', 'huge.delta', 'out'])
    expect(applied.code).toBe(17)
    expect(applied.stderr).toContain(
      roomy ? 'this archive is too big to rebuild' : 'not enough memory to rebuild this archive here',
    )
    expect(applied.stderr).not.toContain(roomy ? 'not enough memory' : 'too big to rebuild')
    expect(
      await leftovers([
        'a.gz',
        'b.gz',
        'ab.delta',
        'big.src',
        'lying.delta',
        'mid.src',
        'huge.delta',
        'huge.src',
      ]),
    ).toEqual([])
  }, 60_000)
})

/** An unsigned LEB128-style VCDIFF integer (big-endian base 128, RFC 3284 section 2). */
function vcdiffInteger(value: number): number[] {
  const digits = [value & 0x7f]
  for (let rest = Math.floor(value / 128); rest > 0; rest = Math.floor(rest / 128))
    digits.unshift((rest & 0x7f) | 0x80)
  return digits
}

/**
 * A sound VCDIFF delta with one window of `length` zero bytes (one RUN): tiny, valid, and past the
 * streaming decoder's 64 MiB window limit when `length` is. xdelta3's encoder never writes one; other
 * encoders (one window for the whole file) do.
 */
function oneRunWindow(length: number): Uint8Array {
  const instructions = [0x00, ...vcdiffInteger(length)] // opcode 0: RUN, size follows
  const encoding = [...vcdiffInteger(length), 0x00, 0x01, ...vcdiffInteger(instructions.length), 0x00]
  const body = [...encoding, 0x00, ...instructions]
  return Uint8Array.from([0xd6, 0xc3, 0xc4, 0x00, 0x00, 0x00, ...vcdiffInteger(body.length), ...body])
}

describe('deltaport delta apply, a sound delta over a limit of the decoder', () => {
  it('a VCDIFF window over the decoder limit says so with its own exit code, not "bad delta"', async () => {
    await writeFile(join(dir, 'empty.src'), '')
    await writeFile(join(dir, 'small-window.vcdiff'), oneRunWindow(1000))
    expect((await cli(['delta', 'apply', 'empty.src', 'small-window.vcdiff', 'small.out'])).code).toBe(0)
    expect((await readFile(join(dir, 'small.out'))).length).toBe(1000)
    await writeFile(join(dir, 'big-window.vcdiff'), oneRunWindow(65 * 2 ** 20))
    const before = await readdir(dir)
    const refused = await cli(['delta', 'apply', 'empty.src', 'big-window.vcdiff', 'big.out'])
    expect(refused.code).toBe(17)
    expect(refused.stderr).not.toContain('bad delta')
    expect(refused.stderr).toContain('exceeds a limit of this decoder')
    // In the user's terms: the ceiling in MiB and what to do, not the codec's option names.
    expect(refused.stderr).toContain('VCDIFF windows of up to 64.0 MiB')
    expect(refused.stderr).toContain('make the delta again with smaller windows')
    expect(refused.stderr).not.toContain('maxWindowSize')
    expect(refused.stderr).toContain('raise the ceiling with --max-window')
    const json = await cli(['--json', 'delta', 'apply', 'empty.src', 'big-window.vcdiff', 'big.out'])
    const error = JSON.parse(json.stdout).error
    expect(error.code).toBe('limit-exceeded')
    // The codec's own words stay in the details, for a bug report.
    expect(error.codecMessage).toBe('vcdiff: target window of 68157440 bytes exceeds maxWindowSize')
    expect(await leftovers(before)).toEqual([])
  })

  it('--max-window raises the ceiling for a delta the user trusts, bounded, and a window the machine cannot hold is exit 17', async () => {
    await writeFile(join(dir, 'empty.src'), '')
    await writeFile(join(dir, 'wide-window.vcdiff'), oneRunWindow(65 * 2 ** 20))
    const applied = await cli([
      'delta',
      'apply',
      '--max-window',
      '66',
      'empty.src',
      'wide-window.vcdiff',
      'wide.out',
    ])
    expect(applied.stderr).toBe('')
    expect(applied.code).toBe(0)
    expect((await readFile(join(dir, 'wide.out'))).length).toBe(65 * 2 ** 20)
    for (const value of ['0', '2048', '1e3', '1.5']) {
      const refused = await cli([
        'delta',
        'apply',
        '--max-window',
        value,
        'empty.src',
        'wide-window.vcdiff',
        'x.out',
      ])
      expect(refused.code, value).toBe(2)
      expect(refused.stderr, value).toContain('--max-window')
    }
    // A 2000 MiB window (a few bytes of delta) let through by the widest --max-window, in 1.5 GB of
    // address space: the memory is not there, which is a limit, not a crash or a bug.
    await writeFile(join(dir, 'huge-window.vcdiff'), oneRunWindow(2000 * 2 ** 20))
    const before = await readdir(dir)
    const unheld = await cliWithin(1.5e9, [
      'delta',
      'apply',
      '--max-window',
      '2047',
      'empty.src',
      'huge-window.vcdiff',
      'huge.out',
    ])
    expect(unheld.stderr).not.toContain('unexpected failure')
    expect(unheld.code).toBe(17)
    expect(unheld.stderr).toContain('not enough memory to apply this delta here')
    expect(await leftovers(before)).toEqual([])
  }, 60_000)

  it('a source archive that expands past the memory allowed is a memory refusal (exit 17), not "bad delta"', async () => {
    // A 2 MiB run of one line: a few KiB of gzip, within twice what 33 MiB allows (≈170 KiB of
    // expanded archive) so the up-front length check lets it through, and it expands to 2 MiB.
    const roomy = gzipSync('all work and no play\n'.repeat(100_000), { level: 9 })
    await writeFile(join(dir, 'roomy.gz'), roomy)
    const small = gzipSync('all work and no play\n'.repeat(1_000), { level: 9 })
    const made = createDelta(new Uint8Array(roomy), new Uint8Array(small), { methods: ['archive'] })
    expect(made.method).toBe('archive')
    // Without its recipe the container's own sizes all fit: only the source's expansion can fail.
    const decoded = decodeContainer(made.delta, { maxTargetBytes: 2 ** 30, maxExpandedBytes: 2 ** 30 })
    await writeFile(join(dir, 'roomy.delta'), encodeContainer({ ...decoded, recipe: [] }))
    const before = await readdir(dir)
    const refused = await cli([
      'delta',
      'apply',
      '--max-memory',
      '33',
      'roomy.gz',
      'roomy.delta',
      'roomy.out',
    ])
    expect(refused.stderr).not.toContain('bad delta')
    expect(refused.code).toBe(17)
    expect(refused.stderr).toContain('not enough memory to rebuild this archive here')
    const json = await cli([
      '--json',
      'delta',
      'apply',
      '--max-memory',
      '33',
      'roomy.gz',
      'roomy.delta',
      'roomy.out',
    ])
    expect(JSON.parse(json.stdout).error.code).toBe('limit-exceeded')
    expect(await leftovers(before)).toEqual([])
  })
})

/**
 * The CLI in a process that can map only `addressSpace` bytes (ulimit -v), so an allocation too big
 * for the machine fails as it would on a small device. Without its trap handler V8 reserves no 10 GB
 * cage for WebAssembly (which Node's type stripping uses), so the process starts within the limit.
 */
async function cliWithin(addressSpace: number, args: string[]) {
  const quoted = [process.execPath, '--disable-wasm-trap-handler', BIN, ...args].map((a) => `'${a}'`)
  try {
    const { stdout, stderr } = await run(
      'sh',
      ['-c', `ulimit -v ${addressSpace >> 10} && exec ${quoted.join(' ')}`],
      {
        cwd: dir,
      },
    )
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

describe('deltaport delta make --source-window, more than the machine can hold', () => {
  it('is a limit to lower (exit 17) naming the option, not an unexpected RangeError, and leaves nothing', async () => {
    // A 700 MiB source (sparse: nothing on disk) matched in one window, in 1.5 GB of address space.
    await writeFile(join(dir, 'wide.src'), '')
    await truncate(join(dir, 'wide.src'), 700 * 2 ** 20)
    await writeArtifact(dir, 'wide.tgt', 100_000)
    const before = await readdir(dir)
    const refused = await cliWithin(1.5e9, [
      'delta',
      'make',
      '--source-window',
      '2047',
      'wide.src',
      'wide.tgt',
      'wide.delta',
    ])
    expect(refused.stderr).not.toContain('unexpected failure')
    expect(refused.code).toBe(17)
    expect(refused.stderr).toContain('--source-window')
    expect(await leftovers(before)).toEqual([])
    // The same pair in a window that fits is made within the same limit.
    const fits = await cliWithin(1.5e9, [
      'delta',
      'make',
      '--source-window',
      '64',
      'wide.src',
      'wide.tgt',
      'wide.delta',
    ])
    expect(fits.stderr).toBe('')
    expect(fits.code).toBe(0)
  }, 60_000)

  it('is parsed against the window the codec can address (1 to 2047 MiB), anything else a usage error', async () => {
    for (const value of ['0', '2048', '1e3', '1.5']) {
      const made = await cli(['delta', 'make', '--source-window', value, 'wide.src', 'wide.tgt', 'x.delta'])
      expect(made.code, value).toBe(2)
      expect(made.stderr, value).toContain('--source-window')
    }
  })
})

describe('deltaport delta make in memory, files this machine cannot hold with their index', () => {
  it('is a limit (exit 17) that points at --stream, not an unexpected RangeError, and leaves nothing', async () => {
    // Sparse sources (nothing on disk) under 1 GiB, so made in memory, in 1.5 GB of address space: 700
    // MiB cannot even be read whole there; 300 MiB is read, and its index (4 bytes a byte) cannot be had.
    await writeFile(join(dir, 'huge.src'), '')
    await truncate(join(dir, 'huge.src'), 700 * 2 ** 20)
    await writeFile(join(dir, 'large.src'), '')
    await truncate(join(dir, 'large.src'), 300 * 2 ** 20)
    await writeArtifact(dir, 'small.tgt', 100_000)
    const before = await readdir(dir)
    for (const source of ['huge.src', 'large.src']) {
      const refused = await cliWithin(1.5e9, ['delta', 'make', source, 'small.tgt', 'small.delta'])
      expect(refused.stderr, source).not.toContain('unexpected failure')
      expect(refused.code, source).toBe(17)
      expect(refused.stderr, source).toContain('not enough memory to make this delta in memory')
      expect(refused.stderr, source).toContain('--stream')
      expect(await leftovers(before), source).toEqual([])
    }
    const json = await cliWithin(1.5e9, ['--json', 'delta', 'make', 'large.src', 'small.tgt', 'small.delta'])
    expect(JSON.parse(json.stdout).error.code).toBe('limit-exceeded')
    // What it advises works within the same limit.
    const streamed = await cliWithin(1.5e9, [
      'delta',
      'make',
      '--stream',
      'large.src',
      'small.tgt',
      'small.delta',
    ])
    expect(streamed.stderr).toBe('')
    expect(streamed.code).toBe(0)
  }, 120_000)
})

describe('deltaport delta make, a method that does not fit the pair', () => {
  it('--method archive on files that are not archives is a usage error that says why, not a bug', async () => {
    await writeArtifact(dir, 'plain-a.bin', 10_000)
    await writeArtifact(dir, 'plain-b.bin', 10_000)
    const made = await cli(['delta', 'make', '--method', 'archive', 'plain-a.bin', 'plain-b.bin', 'p.delta'])
    expect(made.code).toBe(2)
    expect(made.stderr).toContain('archive: not a gzip or zip pair')
    expect(made.stderr).not.toContain('    at ')
    const json = await cli([
      '--json',
      'delta',
      'make',
      '--method',
      'archive',
      'plain-a.bin',
      'plain-b.bin',
      'p.delta',
    ])
    expect(json.code).toBe(2)
    expect(JSON.parse(json.stdout).error.code).toBe('usage')
    await expect(readFile(join(dir, 'p.delta'))).rejects.toThrow()
  })
})

describe('deltaport delta make|apply, an output path that cannot be renamed into', () => {
  it('leaves no temp file behind when the final rename fails (a trailing slash, an empty name)', async () => {
    await writeArtifact(dir, 'rn-a.bin', 10_000)
    await writeArtifact(dir, 'rn-b.bin', 10_000)
    const before = await readdir(dir)
    for (const out of ['not-there/', '']) {
      for (const args of [
        ['make', 'rn-a.bin', 'rn-b.bin', out],
        ['make', '--stream', 'rn-a.bin', 'rn-b.bin', out],
      ]) {
        const made = await cli(['delta', ...args])
        expect(made.code, args.join(' ')).toBe(10)
        expect(await leftovers(before), args.join(' ')).toEqual([])
      }
    }
  })
})

describe('deltaport delta make --stream --method', () => {
  it('with both byte methods allowed picks as it does unrestricted (approx for executables), not the first listed', async () => {
    const plain = await writeArtifact(dir, 'sm-a.bin', 200_000)
    const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), plain.bytes])
    await writeFile(join(dir, 'sm-elf-a'), elf)
    await writeFile(
      join(dir, 'sm-elf-b'),
      Buffer.concat([elf.subarray(0, 90_000), Buffer.from('moved'), elf.subarray(90_000)]),
    )
    await writeFile(
      join(dir, 'sm-b.bin'),
      Buffer.concat([plain.bytes.subarray(0, 90_000), Buffer.from('moved'), plain.bytes.subarray(90_000)]),
    )
    const methodOf = async (args: string[]) => {
      const made = await cli(['--json', 'delta', 'make', '--stream', ...args, 'sm.delta'])
      expect(made.code, args.join(' ')).toBe(0)
      return JSON.parse(made.stdout).delta.method
    }
    for (const [a, b, expected] of [
      ['sm-elf-a', 'sm-elf-b', 'approx'],
      ['sm-a.bin', 'sm-b.bin', 'vcdiff'],
    ] as const) {
      expect(await methodOf([a, b])).toBe(expected)
      expect(await methodOf(['--method', 'vcdiff,approx,archive', a, b])).toBe(expected)
      expect(await methodOf(['--method', 'approx,vcdiff', a, b])).toBe(expected)
    }
    // A source window asks for streaming; it is not dropped for an in-memory make.
    const windowed = await cli([
      '--json',
      'delta',
      'make',
      '--source-window',
      '1',
      'sm-a.bin',
      'sm-b.bin',
      'sm.delta',
    ])
    expect(JSON.parse(windowed.stdout).delta.streamed).toBe(true)
    // One byte method named is that method, whatever the files.
    expect(await methodOf(['--method', 'vcdiff', 'sm-elf-a', 'sm-elf-b'])).toBe('vcdiff')
    expect(await methodOf(['--method', 'archive,approx', 'sm-a.bin', 'sm-b.bin'])).toBe('approx')
  })
})

describe('deltaport delta apply --sha256', () => {
  it('refuses, leaving no output, what a checksum-less VCDIFF delta rebuilds from the wrong source', async () => {
    const a = await writeArtifact(dir, 'sum-a.bin', 100_000)
    const b = Buffer.concat([a.bytes.subarray(0, 50_000), Buffer.from('edit'), a.bytes.subarray(50_000)])
    await writeFile(join(dir, 'sum-b.bin'), b)
    // Another file of the same length: nothing in an `xdelta3 -n` delta can tell it from the source.
    const other = Buffer.from(a.bytes)
    other[10] = (other[10] ?? 0) ^ 0xff
    await writeFile(join(dir, 'sum-other.bin'), other)
    await run('xdelta3', ['-e', '-n', '-S', 'none', '-f', '-s', 'sum-a.bin', 'sum-b.bin', 'sum.vcdiff'], {
      cwd: dir,
    })
    const sha256 = createHash('sha256').update(b).digest('hex')
    const refused = await cli([
      'delta',
      'apply',
      '--sha256',
      sha256,
      'sum-other.bin',
      'sum.vcdiff',
      'sum.out',
    ])
    expect(refused.code).toBe(8)
    expect(refused.stderr).toContain(`not --sha256 ${sha256}`)
    expect((await readdir(dir)).filter((e) => e.includes('sum.out'))).toEqual([])
    // Without --sha256 the same apply "succeeds": the format has nothing to check.
    const unchecked = await cli(['--json', 'delta', 'apply', 'sum-other.bin', 'sum.vcdiff', 'sum.out'])
    expect(unchecked.code).toBe(0)
    expect(JSON.parse(unchecked.stdout).apply.sha256).not.toBe(sha256)
    // The right source with the hash (upper case accepted): rebuilt and reported.
    const applied = await cli([
      '--json',
      'delta',
      'apply',
      '--sha256',
      sha256.toUpperCase(),
      'sum-a.bin',
      'sum.vcdiff',
      'sum.out',
    ])
    expect(applied.code).toBe(0)
    expect(JSON.parse(applied.stdout).apply).toMatchObject({ method: 'vcdiff', sha256 })
    expect(Buffer.compare(await readFile(join(dir, 'sum.out')), b)).toBe(0)
    expect((await cli(['delta', 'apply', '--sha256', 'xyz', 'sum-a.bin', 'sum.vcdiff', 'x'])).code).toBe(2)
  })
})
