package status

import "html/template"

var pageTemplate = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>registry-edge status</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #fafafa; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; }
h2 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
.sub { color: #57606a; margin-bottom: 1rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: .7rem; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem .8rem; }
.card .label { color: #57606a; font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 1.35rem; font-weight: 600; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #eaeef2; font-size: .9rem; }
th { background: #f6f8fa; }
.bad { color: #cf222e; font-weight: 600; } .ok { color: #1a7f37; }
td.mono { font-family: ui-monospace, monospace; font-size: .8rem; }
</style>
</head>
<body>
<h1>registry-edge</h1>
<div class="sub">version {{.Version}} · storage {{.Root}} · {{.Now}}</div>

<div class="cards">
<div class="card" id="disk"><div class="label">Disk used / budget</div><div class="value">{{.StoreUsed}} / {{.Budget}}</div><div>{{.BudgetPct}}</div></div>
<div class="card" id="hits"><div class="label">Cache hit ratio</div><div class="value">{{.HitRatio}}</div><div>{{.Hits}} hits · {{.Misses}} misses · {{.Stale}} stale</div></div>
<div class="card" id="served"><div class="label">Served to devices</div><div class="value">{{.Served}}</div></div>
<div class="card" id="fetched"><div class="label">Fetched from upstreams</div><div class="value">{{.Fetched}}</div><div>uplink saved: {{.Saved}}</div></div>
<div class="card" id="deltas"><div class="label">Saved by deltas</div><div class="value">{{.DeltaSavings}}</div><div>{{.DeltaLayers}} layers rebuilt from deltas, at {{.DeltaRatio}} of their size; {{.DeltaFallbacks}} fell back to a full fetch</div></div>
<div class="card" id="transfers"><div class="label">Transfers resumed</div><div class="value">{{.Resumes}}</div><div>{{.Stalls}} stalls · {{.FillFailures}} failed fills</div></div>
<div class="card" id="evicted"><div class="label">Evicted</div><div class="value">{{.Evicted}}</div></div>
<div class="card" id="denials"><div class="label">Signature-policy denials</div><div class="value">{{.SignatureDenials}}</div><div>{{.SignaturePolicy}}</div></div>
</div>

<h2>Upstreams</h2>
<table id="upstreams"><tr><th>Registry</th><th>State</th><th>Last contact</th></tr>
{{range .Upstreams}}<tr><td>{{.Name}}</td><td class="{{if eq .State "reachable"}}ok{{else}}bad{{end}}">{{.State}}</td><td>{{.LastContact}}</td></tr>
{{else}}<tr><td colspan="3">none</td></tr>{{end}}
</table>

<h2>Pre-staged images ({{.PrefetchDone}} of {{.PrefetchTotal}} complete)</h2>
<table id="prefetch"><tr><th>Image</th><th>State</th><th>Blobs</th><th>Progress</th><th>Digest</th></tr>
{{range .Prefetch}}<tr><td>{{.Ref}}</td><td class="{{if eq .State "failed"}}bad{{end}}">{{.State}}{{if .Error}}: {{.Error}}{{end}}</td><td>{{.BlobsDone}} / {{.Blobs}}</td><td>{{.BytesDone}} / {{.Bytes}} B</td><td class="mono">{{.Digest}}</td></tr>
{{else}}<tr><td colspan="5">none listed</td></tr>{{end}}
</table>

<h2>Recent pulls</h2>
<table id="pulls"><tr><th>Time</th><th>Repository</th><th>Reference</th><th>Status</th><th>Cache</th><th>Reason</th></tr>
{{range .Pulls}}<tr><td>{{.Time.Format "15:04:05"}}</td><td>{{.Repo}}</td><td class="mono">{{.Ref}}</td><td class="{{if ge .Status 400}}bad{{end}}">{{.Status}}</td><td>{{.Cache}}</td><td>{{.Reason}}</td></tr>
{{else}}<tr><td colspan="6">none yet</td></tr>{{end}}
</table>
</body>
</html>
`))
