// Grapheme-to-phoneme: trains a small T5 (letters in, ARPAbet phonemes out) on the CMU pronouncing
// dictionary from its emitted ONNX training graph, then reports word accuracy and phoneme error rate on
// held-out words against a letter-to-phoneme majority-map baseline.
// Usage: dotnet run -c Release --project samples/G2P [-- --steps N --out DIR]
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Models;
using Optimum.Training;
using Optimum.Core;
using Optimum.Data;

long steps = 800;
double lr = 2e-3;
string outDir = "out/g2p";
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (args[i] == "--steps") steps = long.Parse(args[i + 1]);
    else if (args[i] == "--out") outDir = args[i + 1];
    else if (args[i] == "--lr") lr = double.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture);
    else { Console.Error.WriteLine($"error: unknown option {args[i]} (use --steps N, --lr X, --out DIR)"); return 2; }
}

var all = Optimum.Data.Seq2SeqData.ReadPairs("samples/data/cmudict-g2p.tsv").ToArray();
new Random(0).Shuffle(all);
var test = all[..1000];
var rest = all[1000..];                       // the trainer holds out its last 1000 as validation
var tok = SymbolTokenizer.Build(all, sourceSplit: "chars", targetSplit: "words");
var cfg = new T5Config
{
    VocabSize = tok.VocabSize, DModel = 128, DKv = 32, NumHeads = 4, DFf = 512, NumLayers = 3, NumDecoderLayers = 3,
    RelativeAttentionNumBuckets = 32, RelativeAttentionMaxDistance = 64, FeedForwardProj = "relu", DropoutRate = 0.1,
    TieWordEmbeddings = true, ScaleDecoderOutputs = true, MaxLength = 32,
};
var modelDir = Path.Combine(outDir, "model");
ModelKinds.Write(modelDir, cfg);
tok.Save(modelDir);
var pairsFile = Path.Combine(outDir, "train.tsv");
File.WriteAllLines(pairsFile, rest.Select(p => $"{p.Source}\t{p.Target}"));
Console.WriteLine($"{all.Length} words: {rest.Length - 1000} train, 1000 validation, {test.Length} test; vocabulary {tok.VocabSize} symbols");

var options = new TrainerOptions
{
    ModelDir = modelDir, OutputDir = outDir, Steps = steps, BatchSize = 256, Lr = lr, Warmup = Math.Min(50, steps), Schedule = ScheduleKind.Cosine,
    ClipNorm = 1, EvalEvery = (int)Math.Max(1, steps / 5), EvalSamples = 512, SaveEvery = 0, Seed = 0,
    Optimizer = new OptimizerConfig { WeightDecay = 0.01 },
    Overwrite = true,                                   // a second run trains again from scratch (the model folder and pairs are kept)
};
try
{
    if (TrainingJob.Run(new TrainingJobOptions(options, [pairsFile], ValidationFraction: 1000.0 / rest.Length), Console.Out).Interrupted) return 130;
}
catch (Exception e) when (ExpectedErrors.Are(e)) { Console.Error.WriteLine($"error: {e.Message}"); return 1; }

using var lm = new Seq2SeqLm(Path.Combine(outDir, "final"));
var predictions = new List<string>();
foreach (var chunk in test.Chunk(100))
    predictions.AddRange(lm.Generate(chunk.Select(p => (IReadOnlyList<int>)tok.EncodeSource(p.Source)).ToArray(), new GenerationOptions { MaxNewTokens = 24 })
        .Select(r => tok.DecodeTarget(r.Tokens)));
var (accuracy, per) = Score(test.Select(p => p.Target).ToArray(), predictions);
var baseline = Baseline(rest, test);
var (bAcc, bPer) = Score(test.Select(p => p.Target).ToArray(), baseline);
Console.WriteLine($"held-out words: T5 word accuracy {accuracy:P1}, phoneme error rate {per:P1}; majority-map baseline: {bAcc:P1}, {bPer:P1}");
foreach (var i in new[] { 0, 1, 2, 3, 4 })
    Console.WriteLine($"  {test[i].Source,-14} {predictions[i],-28} (dictionary: {test[i].Target})");
return 0;

static (double Accuracy, double Per) Score(IReadOnlyList<string> reference, IReadOnlyList<string> predicted)
{
    int exact = 0, errors = 0, total = 0;
    for (int i = 0; i < reference.Count; i++)
    {
        var r = reference[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var p = predicted[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (r.SequenceEqual(p)) exact++;
        errors += EditDistance(r, p);
        total += r.Length;
    }
    return (exact / (double)reference.Count, errors / (double)total);
}

static int EditDistance(string[] a, string[] b)
{
    var d = new int[a.Length + 1, b.Length + 1];
    for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
    for (int j = 0; j <= b.Length; j++) d[0, j] = j;
    for (int i = 1; i <= a.Length; i++)
        for (int j = 1; j <= b.Length; j++)
            d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
    return d[a.Length, b.Length];
}

// Each letter maps to the phoneme found most often at the same relative position in training words;
// repeated phonemes in a row are merged.
static IReadOnlyList<string> Baseline(IReadOnlyList<(string Source, string Target)> train, IReadOnlyList<(string Source, string Target)> test)
{
    var counts = new Dictionary<char, Dictionary<string, int>>();
    foreach (var (w, t) in train)
    {
        var ph = t.Split(' ');
        for (int i = 0; i < w.Length; i++)
        {
            var p = ph[Math.Min(ph.Length - 1, i * ph.Length / w.Length)];
            if (!counts.TryGetValue(w[i], out var c)) counts[w[i]] = c = [];
            c[p] = c.GetValueOrDefault(p) + 1;
        }
    }
    return test.Select(x =>
    {
        var seq = new List<string>();
        foreach (var ch in x.Source)
        {
            var p = counts.TryGetValue(ch, out var c) ? c.MaxBy(kv => kv.Value).Key : "AH";
            if (seq.Count == 0 || seq[^1] != p) seq.Add(p);
        }
        return string.Join(" ", seq);
    }).ToArray();
}
