#!/usr/bin/env node
import { run } from '../cli.ts'
import { useNativeCrc32 } from '../codec/native-crc32.ts'

// Every checksum the codec computes (apply checks whole sources and targets) on Node's faster CRC-32.
useNativeCrc32()
process.exitCode = await run(process.argv.slice(2))
