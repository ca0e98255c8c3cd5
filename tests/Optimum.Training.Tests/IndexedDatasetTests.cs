using System.Security.Cryptography;
using System.Text;
using Optimum.Data;
using Optimum.Hub;
using Optimum.Tests;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>
/// A tokenizer of one id per UTF-16 character: id = <c>offset + c % span</c>, end of document = vocab - 1. With a vocabulary
/// above 65,536 it makes int32 datasets; its fingerprint differs from GPT-2's, so it also stands for "another tokenizer".
/// </summary>
internal sealed class CharTokenizer(int vocab, int offset) : IDocumentTokenizer
{
    public TokenizerIdentity Identity { get; } = new($"chars-{vocab}-{offset}", SHA256.HashData(Encoding.ASCII.GetBytes($"chars {vocab} {offset}")), vocab, vocab - 1);
    public IReadOnlyList<int> Encode(string text) => text.Select(c => offset + c % (vocab - 1 - offset)).ToArray();
}

/// <summary>Indexed datasets (preprocess, write, read, split, blend) against tokenizing directly and against their bad inputs.</summary>
public sealed class IndexedDatasetTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly string Moby = File.ReadAllText(Repo.Path("samples", "data", "moby-dick.txt"));

    /// <summary>Moby-Dick cut into <paramref name="n"/> text files of <paramref name="chars"/> characters, plus a .jsonl of three records.</summary>
    private string Corpus(string name, int n, int chars, bool jsonl = true)
    {
        var dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        for (int i = 0; i < n; i++) File.WriteAllText(Path.Combine(dir, $"part-{i:D2}.txt"), Moby.Substring(5000 + i * chars, chars));
        if (jsonl)
            File.WriteAllLines(Path.Combine(dir, "records.jsonl"), Enumerable.Range(0, 3).Select(i =>
                System.Text.Json.JsonSerializer.Serialize(new { id = i, text = Moby.Substring(200_000 + i * 700, 700) })));
        return dir;
    }

    private PreprocessResult Run(IReadOnlyList<string> inputs, string prefix, IDocumentTokenizer? tok = null, int workers = 2, List<string>? log = null) =>
        Preprocessor.Run(new PreprocessOptions { Inputs = inputs, OutputPrefix = Path.Combine(_dir, prefix), Workers = workers }, tok ?? new Gpt2DocumentTokenizer(), s => log?.Add(s));

    [Fact]
    public void RoundTrip_EveryDocumentReadsBackAsTokenizingItDirectly_AndTheStreamIsTheTextCorpus()
    {
        var dir = Corpus("rt", 4, 3000);
        var r = Run([dir], "rt");
        using var ds = IndexedDataset.Open(r.Prefix, Gpt2DocumentTokenizer.Gpt2Identity);
        var tok = Gpt2Tokenizer.Create();
        var files = Preprocessor.InputFiles([dir]);
        var texts = files.Where(f => f.EndsWith(".txt")).Select(File.ReadAllText)
            .Concat(File.ReadAllLines(files.Single(f => f.EndsWith(".jsonl"))).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("text").GetString()!)).ToArray();
        Assert.Equal(texts.Length, ds.Documents);
        Assert.Equal(2, ds.BytesPerId);
        for (int i = 0; i < texts.Length; i++) Assert.Equal(tok.Encode(texts[i]), ds.Document(i));
        // The whole stream (documents and end-of-text ids) is what the in-memory path tokenizes from the text files, plus one trailing id.
        var txt = Run(files.Where(f => f.EndsWith(".txt")).ToArray(), "txt");
        using var only = IndexedDataset.Open(txt.Prefix);
        var stream = new long[only.Tokens];
        only.Read(0, stream);
        var corpus = TokenCorpus.Load(files.Where(f => f.EndsWith(".txt")), Path.Combine(_dir, "cache"));
        Assert.Equal(corpus.Tokens.Select(t => (long)t).Append(Gpt2Tokenizer.EndOfText), stream);
        Assert.Equal(r.Documents, ds.Documents);
        Assert.Equal(stream.Length, txt.Tokens);
    }

    [Fact]
    public void Workers_OneAndTwo_WriteTheSameBytes()
    {
        var dir = Corpus("w", 9, 1500);
        var one = Run([dir], "one", workers: 1);
        var two = Run([dir], "two", workers: 2);
        Assert.Equal(File.ReadAllBytes(one.Prefix + ".bin"), File.ReadAllBytes(two.Prefix + ".bin"));
        Assert.Equal(File.ReadAllBytes(one.Prefix + ".idx"), File.ReadAllBytes(two.Prefix + ".idx"));
        Assert.Equal(12, one.Documents);
        // Input order kept: document i is file i (ordinal order), the records last.
        using var ds = IndexedDataset.Open(two.Prefix);
        Assert.Equal(Gpt2Tokenizer.Create().Encode(File.ReadAllText(Path.Combine(dir, "part-05.txt"))), ds.Document(5));
    }

    [Fact]
    public void VocabularyAbove65535_StoresInt32Ids_ThatReadBackExactly()
    {
        var tok = new CharTokenizer(70_000, 65_500);
        var dir = Corpus("wide", 2, 500, jsonl: false);
        var r = Run([dir], "wide", tok);
        Assert.Equal(4, r.BytesPerId);
        using var ds = IndexedDataset.Open(r.Prefix, tok.Identity);
        Assert.Equal(4L * ds.Tokens, new FileInfo(r.Prefix + ".bin").Length);
        var want = tok.Encode(File.ReadAllText(Path.Combine(dir, "part-01.txt")));
        Assert.Equal(want, ds.Document(1));
        Assert.Contains(want, id => id > 65_535);
        var tail = new long[1];
        ds.Read(ds.Tokens - 1, tail);
        Assert.Equal(69_999, tail[0]);                                       // the end-of-document id
        // Ids outside the vocabulary are refused naming the document.
        using var w = new IndexedDatasetWriter(Path.Combine(_dir, "bad"), tok.Identity);
        var e = Assert.Throws<InvalidDataException>(() => w.Add([1, 70_000], "doc-7"));
        Assert.Contains("doc-7", e.Message);
        Assert.Contains("70000", e.Message);
    }

    [Fact]
    public void BadInputFiles_AreRefusedNamingFileAndProblem_AndLeaveNoDataset()
    {
        var dir = Path.Combine(_dir, "bad");
        Directory.CreateDirectory(dir);
        var good = Path.Combine(dir, "good.txt");
        File.WriteAllText(good, "Call me Ishmael.");
        var empty = Path.Combine(dir, "empty.txt");
        File.WriteAllBytes(empty, []);
        var e = Assert.Throws<InvalidDataException>(() => Run([good, empty], "x"));
        Assert.Contains(empty, e.Message);
        Assert.Contains("empty", e.Message);

        var binary = Path.Combine(dir, "binary.txt");
        File.WriteAllBytes(binary, [0x41, 0x00, 0x42]);
        e = Assert.Throws<InvalidDataException>(() => Run([good, binary], "x"));
        Assert.Contains(binary, e.Message);
        Assert.Contains("NUL byte at offset 1", e.Message);

        var jsonl = Path.Combine(dir, "r.jsonl");
        File.WriteAllText(jsonl, "{\"text\": \"a\"}\n{\"body\": \"b\"}\n");
        e = Assert.Throws<InvalidDataException>(() => Run([jsonl], "x"));
        Assert.Contains($"{jsonl}:2", e.Message);
        Assert.Contains("no \"text\" field", e.Message);
        File.WriteAllText(jsonl, "{\"text\": \"a\"}\n\n{\"text\": \"b\"\n");
        e = Assert.Throws<InvalidDataException>(() => Run([jsonl], "x"));
        Assert.Contains($"{jsonl}:3", e.Message);
        File.WriteAllBytes(jsonl, [.. "{\"text\": \"a"u8, 0xC3, 0x28, .. "\"}\n"u8]);
        e = Assert.Throws<InvalidDataException>(() => Run([jsonl], "x"));
        Assert.Contains($"{jsonl}:1", e.Message);

        var missing = Path.Combine(dir, "nope.txt");
        var f = Assert.Throws<FileNotFoundException>(() => Run([missing], "x"));
        Assert.Contains(missing, f.Message);
        // Nothing was renamed into place and no temporary file is left.
        Assert.Empty(Directory.GetFiles(_dir, "x*"));

        // Invalid UTF-8 in a text file is read as U+FFFD with a warning counting the sequences, as the text-file trainer does.
        var latin1 = Path.Combine(dir, "latin1.txt");
        File.WriteAllBytes(latin1, [.. "caf"u8, 0xE9, (byte)' ', .. "na"u8, 0xEF, (byte)'v', (byte)'e']);
        var log = new List<string>();
        var r = Run([latin1], "latin1", log: log);
        Assert.Contains(log, l => l.Contains(latin1) && l.Contains("2 invalid byte sequence(s)"));
        using var ds = IndexedDataset.Open(r.Prefix);
        Assert.Equal(Gpt2Tokenizer.Create().Encode("caf\uFFFD na\uFFFDve"), ds.Document(0));
    }

    [Fact]
    public void DamagedOrForeignDatasets_AreRefusedNamingFileAndProblem()
    {
        var dir = Corpus("d", 3, 800, jsonl: false);
        var a = Run([dir], "a").Prefix;
        var dirB = Corpus("d2", 3, 801, jsonl: false);
        var b = Run([dirB], "b").Prefix;

        // Truncated .bin.
        var t = Path.Combine(_dir, "t");
        Copy(a, t);
        using (var fs = new FileStream(t + ".bin", FileMode.Open)) fs.SetLength(fs.Length - 2);
        var e = Assert.Throws<InvalidDataException>(() => IndexedDataset.Open(t));
        Assert.Contains(t + ".bin", e.Message);
        Assert.Contains("truncated", e.Message);

        // An .idx with another dataset's .bin of the same size: the checksum tells.
        var m = Path.Combine(_dir, "m");
        Copy(a, m);
        var bytes = File.ReadAllBytes(m + ".bin");
        bytes[10] ^= 1;
        File.WriteAllBytes(m + ".bin", bytes);
        e = Assert.Throws<InvalidDataException>(() => IndexedDataset.Open(m));
        Assert.Contains("does not match its index", e.Message);
        Assert.Contains(m + ".bin", e.Message);
        File.Copy(b + ".bin", m + ".bin", true);
        e = Assert.Throws<InvalidDataException>(() => IndexedDataset.Open(m));
        Assert.Contains(m + ".bin", e.Message);

        // A damaged document table.
        var x = Path.Combine(_dir, "x");
        Copy(a, x);
        bytes = File.ReadAllBytes(x + ".idx");
        bytes[^1] ^= 1;
        File.WriteAllBytes(x + ".idx", bytes);
        e = Assert.Throws<InvalidDataException>(() => IndexedDataset.Open(x));
        Assert.Contains(x + ".idx", e.Message);
        Assert.Contains("checksum", e.Message);

        // A missing half.
        File.Delete(x + ".bin");
        var f = Assert.Throws<FileNotFoundException>(() => IndexedDataset.Open(x));
        Assert.Contains(x + ".bin", f.Message);

        // Made with another tokenizer than the model's.
        var other = Run([dir], "chars", new CharTokenizer(300, 0)).Prefix;
        e = Assert.Throws<InvalidDataException>(() => IndexedLmData.Open(other, 16, 0.05, Gpt2DocumentTokenizer.Gpt2Identity));
        Assert.Contains(other + ".idx", e.Message);
        Assert.Contains("'chars-300-0'", e.Message);
        Assert.Contains("'gpt2-bpe-v1'", e.Message);
    }

    private static void Copy(string from, string to)
    {
        File.Copy(from + ".bin", to + ".bin");
        File.Copy(from + ".idx", to + ".idx");
    }

    [Fact]
    public void Writer_InterruptedLeavesTheOldDatasetAndNoTempFiles_AndStaleTempFilesAreRemoved()
    {
        var tok = new CharTokenizer(300, 0);
        var prefix = Path.Combine(_dir, "ds");
        using (var w = new IndexedDatasetWriter(prefix, tok.Identity))
        {
            w.Add(tok.Encode("old"), "old");
            w.Commit();
        }
        var old = File.ReadAllBytes(prefix + ".bin");
        using (var w = new IndexedDatasetWriter(prefix, tok.Identity)) w.Add(tok.Encode("new text"), "new");     // disposed without Commit
        Assert.Equal(old, File.ReadAllBytes(prefix + ".bin"));
        Assert.Equal(2, Directory.GetFiles(_dir).Length);
        // A killed run's temporary files (a process id that does not run) go when the prefix is written next.
        File.WriteAllText(prefix + ".bin.tmp-999999999-0123", "partial");
        File.WriteAllText(prefix + ".idx.tmp-999999999-0123", "partial");
        using (var w = new IndexedDatasetWriter(prefix, tok.Identity))
        {
            w.Add(tok.Encode("new"), "new");
            w.Commit();
        }
        Assert.Equal([prefix + ".bin", prefix + ".idx"], Directory.GetFiles(_dir).Order());
        using var ds = IndexedDataset.Open(prefix, tok.Identity);
        Assert.Equal(tok.Encode("new"), ds.Document(0));
    }

    /// <summary>Documents of one repeated character each: a window's ids say which documents it came from.</summary>
    private IndexedDataset Letters(string name, string letters, int perDoc, CharTokenizer tok)
    {
        var prefix = Path.Combine(_dir, name);
        using (var w = new IndexedDatasetWriter(prefix, tok.Identity))
        {
            foreach (var c in letters) w.Add(tok.Encode(new string(c, perDoc)), c.ToString());
            w.Commit();
        }
        return IndexedDataset.Open(prefix, tok.Identity);
    }

    [Fact]
    public void ValidationSplit_IsWholeTrailingDocuments_NeverOverlappingTraining()
    {
        var tok = new CharTokenizer(61, 0);
        using var data = new IndexedLmData(Letters("v", "ABCDEFGHIJKLMNOPQRST", 100, tok), seqLen: 8, validationFraction: 0.1);
        // 20 documents of 101 ids: the last 2 hold 202 <= 10% of 2020.
        Assert.Equal(18, data.TrainDocuments);
        Assert.Equal(2, data.ValidationDocuments);
        Assert.Equal((18 * 101 - 1) / 8, data.TrainSamples);
        Assert.Equal((2 * 101 - 1) / 8, data.ValidationSamples);
        var train = new HashSet<long>();
        var batch = new Batch();
        for (int s = 0; s < data.TrainSamples; s++)
        {
            data.FillTrain([s], batch);
            train.UnionWith((long[])batch["input_ids"].Data);
        }
        var val = new HashSet<long>();
        for (int s = 0; s < data.ValidationSamples; s++)
        {
            data.FillValidation(s, 1, batch);
            val.UnionWith((long[])batch["input_ids"].Data);
        }
        long eod = tok.Identity.EndOfDocument;
        Assert.Equal("ABCDEFGHIJKLMNOPQR".Select(c => (long)tok.Encode(c.ToString())[0]).Append(eod).Order(), train.Order());
        Assert.Equal("ST".Select(c => (long)tok.Encode(c.ToString())[0]).Append(eod).Order(), val.Order());
        // A last document above the share: no validation rather than most of the corpus.
        using var big = new IndexedLmData(Letters("big", "AB", 100, tok), seqLen: 8, validationFraction: 0.1);
        Assert.Equal((0, 2L), (big.ValidationSamples, big.TrainDocuments));
        Assert.Contains("the last one alone holds more than the validation share", big.NoValidationReason);
        // Held-out documents too short for one window (2 of 4 ids < 9) stay in training, and the reason says so.
        using var tiny = new IndexedLmData(Letters("tiny", "ABCDEFGHIJKLMNOPQRST", 3, tok), seqLen: 8, validationFraction: 0.1);
        Assert.Equal((0L, 20L, 79L / 8), (tiny.ValidationSamples, tiny.TrainDocuments, tiny.TrainSamples));
        Assert.Contains("the last 2 document(s)", tiny.NoValidationReason);
        Assert.Contains("fewer than 9 ids", tiny.NoValidationReason);
        Assert.Null(data.NoValidationReason);
    }

    [Fact]
    public void FolderInputs_MatchExtensionsInAnyCase_AsDirectPathsDo()
    {
        var dir = Path.Combine(_dir, "case");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "a.TXT"), "Call me Ishmael.");
        File.WriteAllText(Path.Combine(dir, "b.JsonL"), "{\"text\": \"Some years ago\"}\n{\"text\": \"never mind how long\"}\n");
        File.WriteAllText(Path.Combine(dir, "c.md"), "not read");
        var files = Preprocessor.InputFiles([dir]);
        Assert.Equal(["a.TXT", "b.JsonL"], files.Select(Path.GetFileName));
        var r = Run([dir], "case");
        Assert.Equal(3, r.Documents);
        using var ds = IndexedDataset.Open(r.Prefix);
        Assert.Equal(Gpt2Tokenizer.Create().Encode("never mind how long"), ds.Document(2));
    }

    [Fact]
    public void Blend_AssignsSamplesByWeight_AndReadsThePartsWindows()
    {
        var tok = new CharTokenizer(61, 0);
        var a = new IndexedLmData(Letters("ba", "ABCDEFGHIJ", 99, tok), 10, 0);               // 99 windows of A..J
        var b = new IndexedLmData(Letters("bb", "XY", 99, tok), 10, 0);                       // 19 windows of X, Y
        using var blend = new BlendedLmData([(0.7, a), (0.3, b)]);
        Assert.Equal(a.TrainSamples + b.TrainSamples, blend.TrainSamples);
        Assert.Equal([0.7, 0.3], blend.Weights);
        // Any prefix of the blend is within one sample of the weights (Megatron's greedy assignment).
        var counts = new long[2];
        for (int i = 0; i < blend.TrainSamples; i++)
        {
            counts[blend.Locate(i).Part]++;
            Assert.True(Math.Abs(counts[0] - 0.7 * (i + 1)) <= 1, $"after {i + 1} samples dataset 0 has {counts[0]}, expected 0.7 x {i + 1}");
        }
        // The trainer's shuffled order: the first 200 samples drawn hold X/Y windows in proportion 0.3 within 0.07.
        var order = new SampleIndex(blend.TrainSamples, 200, seed: 5);
        var batch = new Batch();
        int fromB = 0;
        var xy = new[] { tok.Encode("X")[0], tok.Encode("Y")[0] };
        foreach (var s in order.Slice(0, 200).ToArray())
        {
            blend.FillTrain([s], batch);
            var ids = (long[])batch["input_ids"].Data;
            var (part, window) = blend.Locate(s);
            var want = new long[10];
            (part == 0 ? a : b).Data.Read(window * 10, want);
            Assert.Equal(want, ids);
            if (ids.Any(id => xy.Contains((int)id))) { fromB++; Assert.Equal(1, part); }
        }
        Assert.InRange(fromB / 200.0, 0.23, 0.37);
        // The small dataset is repeated: its 19 windows each serve about 0.3 x 118 / 19 samples.
        Assert.Equal(35, blend.Counts[1]);
    }

    private int _blends;

    /// <summary>A blend of 10 documents (99 windows) at <paramref name="w0"/> and 20 documents (199 windows) at 1 - w0.</summary>
    private BlendedLmData TwoParts(double w0, long samples, int seed)
    {
        var tok = new CharTokenizer(61, 0);
        int n = _blends++;
        return new BlendedLmData([(w0, new IndexedLmData(Letters($"p{n}a", "ABCDEFGHIJ", 99, tok), 10, 0)),
                                  (1 - w0, new IndexedLmData(Letters($"p{n}b", "ABCDEFGHIJKLMNOPQRST", 99, tok), 10, 0))], samples, seed);
    }

    private static long[] WindowsOf(BlendedLmData blend, int part) =>
        Enumerable.Range(0, (int)blend.TrainSamples).Select(i => blend.Locate(i)).Where(l => l.Part == part).Select(l => l.Window).ToArray();

    [Fact]
    public void Blend_DownWeightedPart_DrawsAllItsWindowsInAFreshOrderEachPass_SameForTheSameSeed()
    {
        // Part 1: 199 windows, 0.1 of 5000 samples = 500 = two whole passes and 102 windows of a third.
        using var blend = TwoParts(0.9, 5000, seed: 3);
        Assert.Equal(199, blend.Parts[1].TrainSamples);
        Assert.Equal(500, blend.Counts[1]);
        var windows = WindowsOf(blend, 1);
        var all = Enumerable.Range(0, 199).Select(i => (long)i).ToArray();
        Assert.Equal(all, windows[..199].Order());                           // each pass is a permutation of all windows,
        Assert.Equal(all, windows[199..398].Order());
        Assert.NotEqual(all, windows[..199]);                                // not windows 0..196 in order,
        Assert.NotEqual(windows[..199], windows[199..398]);                  // and a new one each pass
        Assert.Equal(102, windows[398..].Distinct().Count());
        Assert.Equal(99, WindowsOf(blend, 0).Take(99).Distinct().Count());

        // Fewer blend samples than windows (20 of 199): they spread over the dataset instead of its first 20 windows.
        using var few = TwoParts(0.99, 2000, seed: 3);
        var fewWindows = WindowsOf(few, 1);
        Assert.Equal(20, fewWindows.Length);
        Assert.Equal(20, fewWindows.Distinct().Count());
        Assert.True(fewWindows.Count(w => w >= 100) >= 3, $"20 draws of 199 windows: {string.Join(",", fewWindows)}");

        // The same seed gives the same blend; another seed another order with the same counts.
        using var again = TwoParts(0.99, 2000, seed: 3);
        using var other = TwoParts(0.99, 2000, seed: 4);
        var locate = (BlendedLmData b) => Enumerable.Range(0, 2000).Select(i => b.Locate(i)).ToArray();
        Assert.Equal(locate(few), locate(again));
        Assert.NotEqual(locate(few), locate(other));
        Assert.Equal(few.Counts, other.Counts);

        // The window read is the located one; out-of-range samples are refused naming the count.
        var batch = new Batch();
        few.FillTrain([1999], batch);
        var (part, window) = few.Locate(1999);
        var want = new long[10];
        few.Parts[part].Data.Read(window * 10, want);
        Assert.Equal(want, (long[])batch["input_ids"].Data);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => few.FillTrain([2000], batch));
        Assert.Contains("2,000 training samples", e.Message);
    }

    [Fact]
    public void BlendValidation_AnyPrefixIsAWeightedMix_AndCoversEveryHeldOutWindowOnce()
    {
        var tok = new CharTokenizer(61, 0);
        // 20 documents of 101 ids, 10% held out: 2 documents, 20 windows of 10 each.
        var a = new IndexedLmData(Letters("va", "ABCDEFGHIJKLMNOPQRST", 100, tok), 10, 0.1);
        var b = new IndexedLmData(Letters("vb", "abcdefghijklmnopqrst", 100, tok), 10, 0.1);
        Assert.Equal((20L, 20L), (a.ValidationSamples, b.ValidationSamples));
        using var blend = new BlendedLmData([(0.75, a), (0.25, b)]);
        Assert.Equal(40, blend.ValidationSamples);
        var seen = new HashSet<(int, long)>();
        int fromB = 0;
        var batch = new Batch();
        for (int i = 0; i < 40; i++)
        {
            var (part, window) = blend.LocateValidation(i);
            Assert.True(seen.Add((part, window)));
            if (part == 1) fromB++;
            // Until a part runs out (a's 20 windows at about 26 samples), every prefix is within one sample of the weights.
            if (i < 26) Assert.True(Math.Abs(fromB - 0.25 * (i + 1)) <= 1, $"after {i + 1} validation samples {fromB} from b");
            blend.Parts[part].FillValidation(window, 1, batch);
            var direct = ((long[])batch["input_ids"].Data).ToArray();
            blend.FillValidation(i, 1, batch);
            Assert.Equal(direct, (long[])batch["input_ids"].Data);
        }
        Assert.Equal(40, seen.Count);
        // The first 8 (what an evaluation of 8 samples reads) hold both datasets: 6 of a, 2 of b.
        Assert.Equal(2, Enumerable.Range(0, 8).Count(i => blend.LocateValidation(i).Part == 1));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => blend.FillValidation(38, 3, batch));
        Assert.Contains("[38, 41)", e.Message);
    }

    /// <summary>Rewrites header fields of <paramref name="idx"/> and recomputes the header checksum, as a crafted file would.</summary>
    private static void Craft(string idx, Action<byte[]> edit)
    {
        var b = File.ReadAllBytes(idx);
        edit(b);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(120), System.IO.Hashing.XxHash3.HashToUInt64(b.AsSpan(0, 120)));
        File.WriteAllBytes(idx, b);
    }

    [Fact]
    public void CraftedHeaders_WithValidChecksums_AreRefusedNamingTheFile_NotReadOutOfBounds()
    {
        var wide = new CharTokenizer(70_000, 65_500);                        // 4-byte ids
        var dir = Corpus("crafted", 3, 400, jsonl: false);
        var good = Run([dir], "good", wide).Prefix;
        using (var ds = IndexedDataset.Open(good, wide.Identity)) Assert.Equal((3L, 4), (ds.Documents, ds.BytesPerId));
        long docs, tokens;
        using (var ds = IndexedDataset.Open(good)) (docs, tokens) = (ds.Documents, ds.Tokens);
        int n = 0;
        string Case(Action<byte[]> edit)
        {
            var p = Path.Combine(_dir, $"c{n++}");
            Copy(good, p);
            Craft(p + ".idx", edit);
            return p;
        }
        void Refused(string p, string message)
        {
            var e = Assert.Throws<InvalidDataException>(() => IndexedDataset.Open(p));
            Assert.Contains(p + ".idx", e.Message);
            Assert.Contains(message, e.Message);
        }
        var le = (byte[] b, int at, long v) => System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(at), v);
        var le32 = (byte[] b, int at, int v) => System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(at), v);
        // Counts chosen so that 128 + 12 x documents and 4 x ids wrap around to the files' true sizes.
        Refused(Case(b => { le(b, 24, docs + (1L << 62)); le(b, 32, tokens + (1L << 62)); }), "too few for its");
        Refused(Case(b => { le(b, 24, long.MaxValue); le(b, 32, long.MaxValue); }), "too few for its");
        // Ids wrapping alone: the .bin's size names both numbers without overflowing.
        var p = Case(b => le(b, 32, tokens + (1L << 62)));
        var e = Assert.Throws<InvalidDataException>(() => IndexedDataset.Open(p));
        Assert.Contains(p + ".bin", e.Message);
        Assert.Contains($"{tokens + (1L << 62):N0} ids", e.Message);
        // Vocabulary and end-of-document id.
        Refused(Case(b => le32(b, 20, 0)), "vocabulary size 0");
        Refused(Case(b => le32(b, 16, 70_000)), "end-of-document id 70,000 is outside the vocabulary [0, 70,000)");
        Refused(Case(b => le32(b, 16, -1)), "end-of-document id -1");
        Refused(Case(b => b[12] = 2), "vocabulary size 70,000 with 2-byte ids");
    }

    [Fact]
    public void Writer_IndexBytes_AreTheDocumentedLayout_AcrossBodyChunks()
    {
        // 10,000 documents: the offsets (8,192 per 64 KiB chunk) and lengths cross chunk boundaries.
        var tok = new CharTokenizer(300, 0);
        var prefix = Path.Combine(_dir, "many");
        var lengths = Enumerable.Range(0, 10_000).Select(i => i % 7).ToArray();
        using (var w = new IndexedDatasetWriter(prefix, tok.Identity))
        {
            foreach (var len in lengths) w.Add(Enumerable.Repeat(5, len).ToArray(), "doc");
            w.Commit();
        }
        var idx = File.ReadAllBytes(prefix + ".idx");
        var body = new byte[12 * lengths.Length];
        long at = 0;
        for (int i = 0; i < lengths.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(body.AsSpan(8 * i), at);
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(8 * lengths.Length + 4 * i), lengths[i]);
            at += lengths[i] + 1;
        }
        Assert.Equal(128 + body.Length, idx.Length);
        Assert.Equal(body, idx[128..]);
        Assert.Equal(System.IO.Hashing.XxHash3.HashToUInt64(body), System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(idx.AsSpan(112)));
        Assert.Equal(System.IO.Hashing.XxHash3.HashToUInt64(idx.AsSpan(0, 120)), System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(idx.AsSpan(120)));
        Assert.Equal(lengths.Length, System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(idx.AsSpan(24)));
        Assert.Equal(at, System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(idx.AsSpan(32)));
        using var ds = IndexedDataset.Open(prefix, tok.Identity);
        Assert.Equal((9_999L, 9_999 % 7), (ds.Documents - 1, ds.DocumentLength(9_999)));
    }

    [Fact]
    public void Dispose_Twice_IsHarmless_AndReadsAfterItThrow_AndAnOpenDatasetKeepsItsFilesWhenThePrefixIsRewritten()
    {
        var tok = new CharTokenizer(300, 0);
        var ds = Letters("disp", "ABC", 10, tok);
        var first = ds.Document(0);
        // Committing the prefix again renames new files over the paths: the open dataset still reads the files it checked.
        using (var w = new IndexedDatasetWriter(Path.Combine(_dir, "disp"), tok.Identity))
        {
            w.Add(tok.Encode("zz"), "new");
            w.Commit();
        }
        Assert.Equal(first, ds.Document(0));
        Assert.Equal(3, ds.Documents);
        ds.Dispose();
        ds.Dispose();
        Assert.Throws<ObjectDisposedException>(() => ds.Document(0));
        Assert.Throws<ObjectDisposedException>(() => ds.DocumentOffset(0));
        Assert.Throws<ObjectDisposedException>(() => ds.Read(0, new long[1]));
        using var now = IndexedDataset.Open(Path.Combine(_dir, "disp"), tok.Identity);
        Assert.Equal(tok.Encode("zz"), now.Document(0));
        // A blend disposes its parts once each; disposing the parts again afterwards is harmless too.
        var part = new IndexedLmData(Letters("disp2", "ABCDEFGH", 20, tok), 8, 0);
        using (new BlendedLmData([(1.0, part)])) { }
        part.Dispose();
        Assert.Throws<ObjectDisposedException>(() => part.FillTrain([0], new Batch()));
    }

    [Theory]
    [InlineData(new[] { "0.7", "a", "0.3" }, "weight-dataset pairs")]
    [InlineData(new[] { "seven", "a" }, "'seven' (value 1) is not a weight")]
    [InlineData(new[] { "0.7", "a", "0", "b" }, "the weight 0 of 'b'")]
    [InlineData(new[] { "-1", "a" }, "the weight -1 of 'a'")]
    [InlineData(new[] { "NaN", "a" }, "the weight NaN of 'a'")]
    public void BlendWeights_BadOnesAreRefusedNamingTheValue(string[] args, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => BlendPart.Parse(args));
        Assert.Contains(message, e.Message);
    }
}
