// DuckDB's side of the MR-sum goal (docs/perf.md, "Frames"): SELECT sum(x) over ROWS doubles
// (default 100 M, 800 MB) made by random() in a table, with THREADS threads; prints one JSON
// object: the sum's milliseconds, three runs.
// Usage: node duckdb_sum.mjs [ROWS] [THREADS]
import { DuckDBInstance } from '@duckdb/node-api';

const [rows, threads] = [process.argv[2] ?? '100000000', process.argv[3] ?? '2'];
const connection = await (await DuckDBInstance.create(':memory:', { threads })).connect();
await connection.runAndReadAll(`CREATE TABLE t AS SELECT random() AS x FROM range(${Number(rows)})`);
const sum_ms = [];
for (let i = 0; i < 3; i++) {
  const t0 = process.hrtime.bigint();
  await connection.runAndReadAll('SELECT sum(x) FROM t');
  sum_ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
connection.closeSync();
process.stdout.write(JSON.stringify({ rows: Number(rows), threads, sum_ms }) + '\n');
