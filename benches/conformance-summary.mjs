// Summarises results of the HTTP cache test suite (npm package http-cache-tests) as Markdown
// tables, for benches/conformance.sh.
//
//   node conformance-summary.mjs SUITE_DIR NAME=RESULTS.json [NAME=RESULTS.json …] [--list NAME]
//
// Each result is classified as the suite's own report does (lib/display.mjs,
// determineTestResult): a test whose dependency did not pass is not counted as passed or
// failed; `required` tests pass or fail, `optimal` ones pass or fail optionally, `check` ones
// answer yes or no. Results files the suite ships (results/*.json) are read the same way.
// `--list NAME` adds, for that result set, the tests it failed with the suite's message.
// Prints Markdown on stdout.

import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ...rest] = process.argv.slice(2)
if (!suiteDir) {
  console.error('usage: conformance-summary.mjs SUITE_DIR NAME=RESULTS.json … [--list NAME]')
  process.exit(2)
}
const sets = []
const listed = []
for (let i = 0; i < rest.length; i++) {
  if (rest[i] === '--list') {
    listed.push(rest[++i])
    continue
  }
  const at = rest[i].indexOf('=')
  sets.push({ name: rest[i].slice(0, at), file: rest[i].slice(at + 1) })
}

const load = async p => (await import(pathToFileURL(path.join(suiteDir, p)).href)).default
// The command-line client runs the index's suites plus the surrogate-control one.
const suites = [...(await load('tests/index.mjs')), await load('tests/surrogate-control.mjs')]
const byId = new Map()
for (const suite of suites) {
  for (const test of suite.tests) byId.set(test.id, { test, suite })
}
// Browser-only tests are not run from the command line.
const cliTest = t => t.browser_only !== true

function classify (results, id, seen = new Set()) {
  const { test } = byId.get(id)
  const result = results[id]
  if (result === undefined) return 'untested'
  if (test.depends_on !== undefined && !seen.has(id)) {
    seen.add(id)
    for (const dep of test.depends_on) {
      if (!byId.has(dep)) continue
      const d = classify(results, dep, seen)
      if (d !== 'pass' && d !== 'yes') return 'dependency'
    }
  }
  if (Array.isArray(result) && result[0] === 'Setup') return result[1] === 'retry' ? 'retry' : 'setup'
  const kind = test.kind || 'required'
  if (kind === 'required') return result === true ? 'pass' : 'fail'
  if (kind === 'optimal') return result === true ? 'pass' : 'optional'
  return result === true ? 'yes' : 'no'
}

function tally (results, filter = () => true) {
  const t = { pass: 0, fail: 0, optional: 0, yes: 0, no: 0, dependency: 0, setup: 0, retry: 0, untested: 0 }
  for (const [id, { test, suite }] of byId) {
    if (!cliTest(test) || !filter(suite)) continue
    t[classify(results, id)]++
  }
  return t
}

const data = sets.map(s => ({ ...s, results: JSON.parse(fs.readFileSync(s.file, 'utf8')) }))
const out = []
out.push('| cache | passed | failed | optional failed | checks yes / no | not counted: dependency failed / setup / retry / not run |')
out.push('|---|---:|---:|---:|---:|---:|')
for (const s of data) {
  const t = tally(s.results)
  out.push(`| ${s.name} | ${t.pass} | ${t.fail} | ${t.optional} | ${t.yes} / ${t.no} | ${t.dependency} / ${t.setup} / ${t.retry} / ${t.untested} |`)
}
out.push('')
out.push('By category: passed / failed / optional failed.')
out.push('')
out.push(`| category | ${data.map(s => s.name).join(' | ')} |`)
out.push(`|---|${data.map(() => '---:').join('|')}|`)
for (const suite of suites) {
  const cells = data.map(s => {
    const t = tally(s.results, x => x === suite)
    return `${t.pass} / ${t.fail} / ${t.optional}`
  })
  out.push(`| ${suite.name} | ${cells.join(' | ')} |`)
}
for (const name of listed) {
  const s = data.find(x => x.name === name)
  if (!s) continue
  for (const [what, title] of [['fail', 'failed'], ['optional', 'optional failed']]) {
    const rows = []
    for (const [id, { test }] of byId) {
      if (!cliTest(test) || classify(s.results, id) !== what) continue
      const msg = Array.isArray(s.results[id]) ? String(s.results[id][1]).replace(/\|/g, '\\|').replace(/\s+/g, ' ') : ''
      rows.push(`| \`${id}\` | ${msg} |`)
    }
    out.push('')
    out.push(`${name}, ${title} (${rows.length}):`)
    out.push('')
    if (rows.length) {
      out.push('| test | message |')
      out.push('|---|---|')
      out.push(...rows)
    }
  }
}
console.log(out.join('\n'))
