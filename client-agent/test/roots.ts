/**
 * Root metadata for agent tests (ADR 0035): root statements over generated keys, stored on a real
 * local edge, and releases signed by chosen maintainer keys.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'vitest'
import type { RootStatement, SignedRoot } from '../../schemas/root.ts'
import { rootPath } from '../edge-client.ts'
import { publishArtifact } from '../publish.ts'
import type { KeyPairFiles } from '../signing.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN } from './local-edge.ts'

const DAY_MS = 86_400_000

/** Root `version` naming `roles.root` and `roles.maintainers` (threshold 1 unless given), valid a year. */
export function rootBody(
  version: number,
  roles: { root: KeyPairFiles[]; maintainers: KeyPairFiles[]; threshold?: number },
  expires = new Date(Date.now() + 365 * DAY_MS),
): RootStatement {
  const all = [...roles.root, ...roles.maintainers]
  return {
    _type: 'deltaport/root',
    version,
    expires: expires.toISOString(),
    keys: Object.fromEntries(all.map((k) => [k.keyid, { publicKey: k.publicKey }])),
    roles: {
      root: { keyids: roles.root.map((k) => k.keyid), threshold: 1 },
      maintainers: { keyids: roles.maintainers.map((k) => k.keyid), threshold: roles.threshold ?? 1 },
    },
  }
}

/** Stores `root` on the edge as a maintainer's `root publish` would; a refusal fails the test. */
export async function putRoot(edgeUrl: string, root: SignedRoot): Promise<void> {
  const response = await fetch(`${edgeUrl}${rootPath(root.signed.version)}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${TEST_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(root),
  })
  expect(response.status, await response.clone().text()).toBe(201)
}

/** `key` as a key file in `dir` (what `--key` and publish's keyFile take). */
export async function keyFileIn(dir: string, key: KeyPairFiles): Promise<string> {
  const path = join(dir, `${key.keyid.slice(0, 12)}.key.json`)
  await writeFile(path, JSON.stringify(key))
  return path
}

/** Publishes `name@version` to the edge at `edgeUrl`, signed by each of `signers`. */
export async function publishSignedByAll(
  edgeUrl: string,
  dir: string,
  release: { name: string; version: string },
  signers: KeyPairFiles[],
): Promise<void> {
  const art = await writeArtifact(dir, `${release.name}-${release.version}.bin`, 2_000)
  await publishArtifact({
    edgeUrl,
    token: TEST_TOKEN,
    keyFile: await Promise.all(signers.map((k) => keyFileIn(dir, k))),
    file: art.path,
    ...release,
  })
}
