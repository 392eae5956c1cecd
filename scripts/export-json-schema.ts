/** Writes docs/schemas/*.schema.json from the zod schemas (`npm run schemas`). */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { jsonSchemaDocuments } from '../schemas/json-schema.ts'

const dir = join(import.meta.dirname, '..', 'docs', 'schemas')
for (const [file, text] of Object.entries(jsonSchemaDocuments())) await writeFile(join(dir, file), text)
console.log(`wrote ${Object.keys(jsonSchemaDocuments()).length} schemas to docs/schemas`)
