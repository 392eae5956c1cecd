import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { jsonSchemaDocuments } from './json-schema.ts'

describe('exported JSON Schema', () => {
  it('matches the committed docs/schemas (run `npm run schemas` after changing a schema)', async () => {
    for (const [file, text] of Object.entries(jsonSchemaDocuments())) {
      expect(await readFile(join(import.meta.dirname, '..', 'docs', 'schemas', file), 'utf8'), file).toBe(
        text,
      )
    }
  })
})
