// The ModelCompressionGate task (Node20_1 handler). It checks its inputs, runs the ModelCompression module in pwsh over
// every model the glob matches (run.ps1: the stages, Compare-Model, Measure-ModelLatency, one verdict per model), then
// turns the verdicts into what Azure DevOps understands: one error issue per missed gate or failed model, the reports
// folder as a pipeline artifact, and the task result. The module itself never writes ##vso commands.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const tl = require('azure-pipelines-task-lib/task');

// Each gate input: its parameter name in the gate script and the range of its unit (all relative gates are fractions).
const gates = [
    { input: 'minCosine', parameter: 'MinCosine', min: -1, max: 1, unit: 'a cosine from -1 to 1' },
    { input: 'maxAccuracyDrop', parameter: 'MaxAccuracyDrop', min: 0, max: 1, unit: 'a fraction from 0 to 1 (0.01: one percentage point)' },
    { input: 'minTop1Agreement', parameter: 'MinTop1Agreement', min: 0, max: 1, unit: 'a fraction from 0 to 1' },
    { input: 'maxPerplexityRise', parameter: 'MaxPerplexityRise', min: 0, max: 1, unit: 'a fraction from 0 to 1 (0.01: 1 %)' },
    { input: 'maxLatencyRatio', parameter: 'MaxLatencyRatio', min: 0, max: Infinity, exclusiveMin: true, unit: 'a ratio above 0 (1.05: 5 % slower at most)' },
    { input: 'latencySeconds', parameter: 'LatencySeconds', min: 0, max: Infinity, exclusiveMin: true, unit: 'seconds above 0' },
];

/** The request for run.ps1, or the list of what is wrong with the inputs (one issue each). */
function readInputs() {
    const problems = [];
    const root = tl.getVariable('System.DefaultWorkingDirectory') || process.cwd();
    const patterns = tl.getDelimitedInput('models', '\n', true).map(p => p.trim()).filter(p => p.length > 0);
    const models = tl.findMatch(root, patterns).filter(f => f.toLowerCase().endsWith('.onnx') && fs.statSync(f).isFile());
    if (patterns.length === 0) problems.push('Input models: give at least one glob pattern of ONNX files.');
    else if (models.length === 0) problems.push(`Input models: no .onnx file matches ${patterns.map(p => `'${p}'`).join(', ')} under '${root}'.`);
    const request = { models, root, pipeline: tl.getInput('pipeline', true), data: null, gates: {} };
    const data = tl.getInput('data', false);
    if (data) {
        request.data = path.resolve(root, data);
        if (!fs.existsSync(request.data)) problems.push(`Input data: '${request.data}' does not exist.`);
    }
    for (const gate of gates) {
        const text = (tl.getInput(gate.input, false) || '').trim();
        if (text === '') { request.gates[gate.parameter] = null; continue; }
        const value = Number(text);
        const low = gate.exclusiveMin ? value <= gate.min : value < gate.min;
        if (!Number.isFinite(value) || low || value > gate.max) problems.push(`Input ${gate.input}: '${text}' is not ${gate.unit}.`);
        else request.gates[gate.parameter] = value;
    }
    request.reports = path.resolve(root, tl.getInput('reports', false) || path.join(tl.getVariable('Build.ArtifactStagingDirectory') || root, 'model-compression'));
    request.artifactName = tl.getInput('artifactName', false) || 'model-compression';
    return { request, problems };
}

function fail(issues) {
    // The issues are about the user's models and inputs, not the task's own failure.
    for (const issue of issues) tl.error(issue, tl.IssueSource.CustomerScript);
    // No message: it would be logged as one more issue. The issues above say what failed.
    tl.setResult(tl.TaskResult.Failed);
    process.exitCode = 1;
}

async function run() {
    const { request, problems } = readInputs();
    if (problems.length > 0) return fail(problems);
    fs.mkdirSync(request.reports, { recursive: true });
    for (const stale of ['summary.json', 'problems.json']) fs.rmSync(path.join(request.reports, stale), { force: true });
    const requestFile = path.join(tl.getVariable('Agent.TempDirectory') || os.tmpdir(), `model-compression-${process.pid}.json`);
    fs.writeFileSync(requestFile, JSON.stringify(request));
    console.log(`Gating ${request.models.length} model(s); reports in ${request.reports}`);
    const pwsh = tl.tool(tl.which('pwsh', true)).arg(['-NoLogo', '-NoProfile', '-NonInteractive', '-File', path.join(__dirname, 'run.ps1'), '-Request', requestFile]);
    const code = await pwsh.exec({ ignoreReturnCode: true, cwd: request.root });
    fs.rmSync(requestFile, { force: true });

    const problemsFile = path.join(request.reports, 'problems.json');
    if (fs.existsSync(problemsFile)) return fail(JSON.parse(fs.readFileSync(problemsFile, 'utf8')).Problems);
    const summaryFile = path.join(request.reports, 'summary.json');
    if (!fs.existsSync(summaryFile)) return fail([`pwsh exited with code ${code} and wrote no summary.json.`]);
    tl.uploadArtifact('model-compression', request.reports, request.artifactName);
    const summary = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));
    const issues = [];
    for (const model of summary.Models) {
        for (const gate of model.FailedGates || []) issues.push(`${model.Model}: ${gate.ErrorId}: ${gate.Message}`);
        if (model.Error) issues.push(`${model.Model}: ${model.Error}`);
        for (const gate of model.SkippedGates || []) console.log(`${model.Model}: ${gate.Gate} not checked: ${gate.Message}`);
    }
    if (!summary.Passed) return fail(issues.length > 0 ? issues : ['No model passed the gates.']);
    tl.setResult(tl.TaskResult.Succeeded, `${summary.Models.length} model(s) passed.`);
}

run().catch(e => fail([e.message]));
