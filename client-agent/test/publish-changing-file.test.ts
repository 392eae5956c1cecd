import { appendFile, readFile, truncate, writeFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { type PublishRequest, publishArtifact } from '../publish.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { expectSameBytes, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

// A small single-PUT cap: artifacts over 6 MiB take the multipart path.
const suite = useEdgeWorkspace({ MAX_SINGLE_PUT_BYTES: String(6 * 1024 * 1024) })

function request(file: string, name: string, extra: Partial<PublishRequest> = {}): PublishRequest {
  return {
    edgeUrl: suite.edge.url,
    token: TEST_TOKEN,
    keyFile: suite.ws.keyFile,
    file,
    name,
    version: '1.0.0',
    ...extra,
  }
}

/** A fetch that runs `change` once, just before the first request `matches` picks is sent. */
function changingBefore(matches: (url: string, init?: RequestInit) => boolean, change: () => Promise<void>) {
  let done = false
  const fetchImpl: typeof fetch = async (input, init) => {
    if (!done && matches(String(input), init)) {
      done = true
      await change()
    }
    return fetch(input, init)
  }
  return fetchImpl
}

const blobPut = (url: string, init?: RequestInit) => init?.method === 'PUT' && url.endsWith('/blob')
const multipartStart = (url: string, init?: RequestInit) =>
  init?.method === 'POST' && url.endsWith('/uploads')

async function failure(publishing: Promise<unknown>): Promise<AgentError> {
  const error = await publishing.then(
    () => null,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(AgentError)
  return error as AgentError
}

describe('an artifact file that changes while it is published', () => {
  it('rewritten after signing (one PUT): integrity-mismatch naming the file, and a rerun publishes at once', async () => {
    const art = await writeArtifact(suite.ws.dir, 'rewritten.bin', 100_000)
    const other = Buffer.alloc(art.bytes.length, 7)
    const error = await failure(
      publishArtifact(
        request(art.path, 'rewritten', {
          fetchImpl: changingBefore(blobPut, () => writeFile(art.path, other)),
        }),
      ),
    )
    expect(error.code).toBe('integrity-mismatch')
    expect(error.message).toContain(`${art.path} changed while it was being published`)
    // Nothing of the failed attempt holds the version: the rerun (the file as it is now) goes through.
    const published = await publishArtifact(request(art.path, 'rewritten'))
    expect(published.size).toBe(other.length)
    const blob = await fetch(`${suite.edge.url}/v1/artifacts/rewritten/1.0.0/blob`)
    expectSameBytes(new Uint8Array(await blob.arrayBuffer()), other)
  })

  it('truncated after signing (one PUT): not a network error, and the version is not held for 30 minutes', async () => {
    const art = await writeArtifact(suite.ws.dir, 'shrunk.bin', 3 * 1024 * 1024)
    const error = await failure(
      publishArtifact(
        request(art.path, 'shrunk', {
          fetchImpl: changingBefore(blobPut, () => truncate(art.path, 1024 * 1024 + 5)),
        }),
      ),
    )
    expect(error.code).toBe('integrity-mismatch')
    expect(error.message).toContain(`${art.path} changed while it was being published`)
    await writeFile(art.path, art.bytes)
    expect((await publishArtifact(request(art.path, 'shrunk'))).sha256).toBe(
      (await new EdgeClient(suite.edge.url).manifest('shrunk', '1.0.0')).signed.sha256,
    )
  })

  it('appended to after signing (one PUT): exactly the signed bytes are published', async () => {
    const art = await writeArtifact(suite.ws.dir, 'grown.bin', 100_000)
    const published = await publishArtifact(
      request(art.path, 'grown', { fetchImpl: changingBefore(blobPut, () => appendFile(art.path, 'more')) }),
    )
    expect(published.size).toBe(art.bytes.length)
    const blob = await fetch(`${suite.edge.url}/v1/artifacts/grown/1.0.0/blob`)
    expectSameBytes(new Uint8Array(await blob.arrayBuffer()), art.bytes)
  })

  it('truncated during a multipart upload: integrity-mismatch, and a rerun publishes at once', async () => {
    const art = await writeArtifact(suite.ws.dir, 'parts.bin', 12 * 1024 * 1024 + 99)
    const error = await failure(
      publishArtifact(
        request(art.path, 'parts', {
          fetchImpl: changingBefore(multipartStart, () => truncate(art.path, 7 * 1024 * 1024)),
        }),
      ),
    )
    expect(error.code).toBe('integrity-mismatch')
    expect(error.message).toContain(`${art.path} changed while it was being published`)
    await writeFile(art.path, art.bytes)
    const published = await publishArtifact(request(art.path, 'parts'))
    expect(published.size).toBe(art.bytes.length)
    const blob = await fetch(`${suite.edge.url}/v1/artifacts/parts/1.0.0/blob`)
    expectSameBytes(new Uint8Array(await blob.arrayBuffer()), art.bytes)
  })

  it('rewritten after its deltas were built: refused before anything is staged, the deltas would not rebuild it', async () => {
    const v1 = await writeArtifact(suite.ws.dir, 'dl-1.bin', 200_000)
    await publishArtifact(request(v1.path, 'dl'))
    // v2 shares most of v1, so a delta is worth listing.
    const v2Bytes = Buffer.concat([v1.bytes.subarray(0, 150_000), Buffer.alloc(50_000, 1)])
    const v2Path = `${suite.ws.dir}/dl-2.bin`
    await writeFile(v2Path, v2Bytes)
    const deltas = await buildDeltasFromPrevious(suite.edge.url, 'dl', v2Path, 1, { version: '2.0.0' })
    expect(deltas).toHaveLength(1)
    // The build writes the artifact again between `deltaport publish` building the deltas and hashing it.
    const rebuilt = Buffer.concat([v1.bytes.subarray(0, 150_000), Buffer.alloc(50_000, 2)])
    await writeFile(v2Path, rebuilt)
    const error = await failure(publishArtifact(request(v2Path, 'dl', { version: '2.0.0', deltas })))
    expect(error.code).toBe('integrity-mismatch')
    expect(error.message).toContain(`${v2Path} changed while it was being published`)
    // Nothing was staged: the publish with deltas of the file as it is now goes through at once.
    const fresh = await buildDeltasFromPrevious(suite.edge.url, 'dl', v2Path, 1, { version: '2.0.0' })
    await publishArtifact(request(v2Path, 'dl', { version: '2.0.0', deltas: fresh }))
    const manifest = (await new EdgeClient(suite.edge.url).manifest('dl', '2.0.0')).signed
    expect(manifest.sha256).toBe(
      (await import('node:crypto'))
        .createHash('sha256')
        .update(await readFile(v2Path))
        .digest('hex'),
    )
    expect(manifest.deltas).toHaveLength(1)
  })
})
