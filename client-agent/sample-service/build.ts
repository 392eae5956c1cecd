import { readFile, writeFile } from 'node:fs/promises'
import { stripTypeScriptTypes } from 'node:module'
import { join } from 'node:path'

export interface SampleBuild {
  version: string
  /** `health`: the build never passes its health check; `writes`: it fails every write with 500. */
  fail?: 'none' | 'health' | 'writes'
  startupDelayMs?: number
  /** The build exits this long after it starts listening (0 or absent: never). */
  crashAfterMs?: number
  /** Each write waits this long before it is applied (0 or absent: none): a slow replay. */
  writeDelayMs?: number
}

const SOURCE = join(import.meta.dirname, 'service.ts')
const MARKER = /^const BUILD: Build = .*\/\/ @build$/m

/**
 * Builds one version of the sample service as a single plain-JavaScript ES module (types stripped, the
 * build constants baked in): a file `deltaport publish` can ship and `node {artifact}` can run.
 */
export async function buildSampleService(outFile: string, build: SampleBuild): Promise<string> {
  const source = await readFile(SOURCE, 'utf8')
  if (!MARKER.test(source)) throw new Error('service.ts lost its @build line')
  const constants = {
    version: build.version,
    fail: build.fail ?? 'none',
    startupDelayMs: build.startupDelayMs ?? 0,
    ...(build.crashAfterMs ? { crashAfterMs: build.crashAfterMs } : {}),
    ...(build.writeDelayMs ? { writeDelayMs: build.writeDelayMs } : {}),
  }
  const baked = source.replace(MARKER, `const BUILD: Build = ${JSON.stringify(constants)}`)
  const js = stripTypeScriptTypes(baked, { mode: 'strip' })
  await writeFile(outFile, `// deltaport sample service ${build.version} (built)\n${js}`)
  return outFile
}
