using System.Buffers.Binary;
using System.Text;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;

namespace Optimum.Hub.Tests;

public sealed class SafeTensorsTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);
    private string F(string name) => Path.Combine(_dir, name);

    [Fact]
    public void WriteRead_RoundTripsEveryDtype()
    {
        var half = new[] { (Half)1.5f, (Half)(-2f), (Half)0.25f };
        var bf16 = new float[] { 1f, -3.5f, 0.15625f }.SelectMany(f => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(f) >> 16))).ToArray();
        var tensors = new[]
        {
            SafeTensor.FromFloats("a.weight", [1f, 2f, 3f, 4f, 5f, 6f], 2, 3),
            SafeTensor.FromInt64s("ids", [7, -1, 42], 3),
            new SafeTensor("h", DType.Float16, [3], half.SelectMany(h => BitConverter.GetBytes(h)).ToArray()),
            new SafeTensor("b", DType.BFloat16, [3], bf16),
            SafeTensor.FromFloats("scalar", [9f]),
        };
        SafeTensorsFile.Write(F("t.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        using var f = SafeTensorsFile.Open(F("t.safetensors"));
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal([1f, 2f, 3f, 4f, 5f, 6f], f.Read("a.weight").ToFloats());
        Assert.Equal([2L, 3L], f.Info("a.weight").Shape);
        Assert.Equal([7L, -1L, 42L], f.Read("ids").ToInt64s());
        Assert.Equal([1.5f, -2f, 0.25f], f.Read("h").ToFloats());
        Assert.Equal([1f, -3.5f, 0.15625f], f.Read("b").ToFloats());
        Assert.Empty(f.Info("scalar").Shape);
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(F("t.safetensors"))) % 8);
        var again = F("u.safetensors");
        SafeTensorsFile.Write(again, tensors.Reverse(), new Dictionary<string, string> { ["format"] = "pt" });
        Assert.Equal(File.ReadAllBytes(F("t.safetensors")), File.ReadAllBytes(again));     // order-independent, deterministic
    }

    [Fact]
    public void HuggingFaceFile_ReadsAndRewritesByteIdentically()
    {
        var src = Path.Combine(Repo.Fixture("gpt2-tiny"), "model.safetensors");
        using var f = SafeTensorsFile.Open(src);
        Assert.Equal(28, f.Names.Count);
        SafeTensorsFile.Write(F("copy.safetensors"), f.Names.Select(f.Read), f.Metadata);
        Assert.Equal(File.ReadAllBytes(src), File.ReadAllBytes(F("copy.safetensors")));
    }

    [Fact]
    public void StreamedWrite_IsByteIdenticalToArrays_AndRefusesAWrongByteCount()
    {
        var a = new float[] { 1f, -2f, 3.5f, 4f, 5f, 6f };
        var b = new float[] { 0.25f, 7f };
        SafeTensorsFile.Write(F("arrays.safetensors"), [SafeTensor.FromFloats("a", a, 2, 3), SafeTensor.FromFloats("b", b, 2)], new Dictionary<string, string> { ["format"] = "pt" });
        SafeTensorsFile.Write(F("streamed.safetensors"), [SafeTensorSource.Floats("a", [2, 3], () => a), SafeTensorSource.Floats("b", [2], () => b)],
            new Dictionary<string, string> { ["format"] = "pt" });
        Assert.Equal(File.ReadAllBytes(F("arrays.safetensors")), File.ReadAllBytes(F("streamed.safetensors")));
        // A source that writes fewer bytes than its shape needs would shift every later tensor: refused, nothing left behind.
        var e = Assert.Throws<ArgumentException>(() => SafeTensorsFile.Write(F("short.safetensors"), [SafeTensorSource.Floats("a", [2, 3], () => b)]));
        Assert.Contains("'a' wrote 8 bytes", e.Message);
        Assert.Equal(["arrays.safetensors", "streamed.safetensors"], Directory.GetFiles(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void HfWeights_StreamedSaveEqualsArraySave()
    {
        var ps = new[] { new ParameterInfo("w", [2, 2]), new ParameterInfo("b", [2]) };
        float[][] weights = [[1f, 2f, 3f, 4f], [5f, 6f]];
        HfWeights.Save(F("a.safetensors"), ps, weights);
        HfWeights.Save(F("s.safetensors"), ps, i => weights[i]);
        Assert.Equal(File.ReadAllBytes(F("a.safetensors")), File.ReadAllBytes(F("s.safetensors")));
        Assert.Throws<ArgumentException>(() => HfWeights.Save(F("bad.safetensors"), ps, i => weights[0]));
    }

    private string Raw(string name, string header, int dataBytes, int? claimedLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)(claimedLength ?? h.Length));
        h.CopyTo(bytes, 8);
        File.WriteAllBytes(F(name), bytes);
        return F(name);
    }

    [Theory]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "tensor 'w': data_offsets end 8 exceeds the 4 data bytes")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "tensor 'w': data_offsets span 8 bytes but F32[3] needs 12")]
    [InlineData("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'w': dtype \"Q4\" is not one of")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "tensor 'w': shape is not an array of non-negative integers")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'w': data_offsets begin 4 should be 0")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "the data section has 8 bytes but the tensors cover 4")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'w': data_offsets is not")]
    [InlineData("{\"w\": [1, 2", 0, "header is not valid JSON")]
    [InlineData("[1, 2]", 0, "header is not a JSON object")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8, "tensor 'w': shape [4611686018427387904, 4] has more elements than a file can hold")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 8, "tensor 'w': data_offsets is not [begin, end]")]
    [InlineData("{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "header holds a string that cannot be decoded")]
    [InlineData("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice")]
    [InlineData("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "__metadata__.a appears twice")]
    public void InvalidFiles_AreRefusedNamingFileAndField(string header, int dataBytes, string expected)
    {
        var path = Raw("bad.safetensors", header, dataBytes);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    /// <summary>As the reference reader (an optional map): a null __metadata__ is none.</summary>
    [Fact]
    public void NullMetadata_IsNone()
    {
        using var f = SafeTensorsFile.Open(Raw("null-meta.safetensors", "{\"__metadata__\":null,\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
        Assert.Empty(f.Metadata);
        Assert.Equal(["w"], f.Names);
    }

    /// <summary>A parameter must be floating-point and finite: an integer tensor or a NaN weight in an HF checkpoint is corrupt input.</summary>
    [Fact]
    public void IntegerOrNonFiniteParameters_AreRefusedNamingTheFileAndTensor()
    {
        ParameterInfo[] ps = [new("w", [2])];
        var ints = F("ints.safetensors");
        SafeTensorsFile.Write(ints, [new SafeTensor("w", DType.Int32, [2], new byte[8])]);
        var e = Assert.Throws<InvalidDataException>(() => HfWeights.Load(ints, ps, out _));
        Assert.Contains($"{ints}: tensor 'w' is int32; a parameter must be floating-point", e.Message);
        var nan = F("nan.safetensors");
        SafeTensorsFile.Write(nan, [SafeTensor.FromFloats("w", [1, float.NaN], 2)]);
        Assert.Contains($"{nan}: tensor 'w' holds NaN at element 1", Assert.Throws<InvalidDataException>(() => HfWeights.Load(nan, ps, out _)).Message);
        var big = F("big.safetensors");
        SafeTensorsFile.Write(big, [new SafeTensor("w", DType.Double, [2], [.. BitConverter.GetBytes(1.0), .. BitConverter.GetBytes(1e300)])]);
        Assert.Contains("holds Infinity at element 1 (as float32)", Assert.Throws<InvalidDataException>(() => HfWeights.Load(big, ps, out _)).Message);
    }

    [Fact]
    public void TruncatedOrTinyFiles_AreRefused()
    {
        var ok = F("ok.safetensors");
        SafeTensorsFile.Write(ok, [SafeTensor.FromFloats("w", new float[64], 8, 8)]);
        var bytes = File.ReadAllBytes(ok);
        File.WriteAllBytes(F("cut.safetensors"), bytes[..^10]);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(F("cut.safetensors")));
        Assert.Contains("tensor 'w': data_offsets end 256 exceeds the 246 data bytes (truncated file?)", e.Message);
        File.WriteAllBytes(F("tiny.safetensors"), [1, 2, 3]);
        Assert.Contains("too short for a header", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(F("tiny.safetensors"))).Message);
        var huge = Raw("huge.safetensors", "{}", 0, claimedLength: 1 << 30);
        Assert.Contains("header length 1073741824 exceeds", Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(huge)).Message);
        Assert.Throws<FileNotFoundException>(() => SafeTensorsFile.Open(F("missing.safetensors")));
    }

    [Fact]
    public void Write_RefusesInconsistentTensorsAndLeavesNoFile()
    {
        var bad = new SafeTensor("w", DType.Float, [3], new byte[8]);
        Assert.Throws<ArgumentException>(() => SafeTensorsFile.Write(F("x.safetensors"), [bad]));
        Assert.Empty(Directory.GetFiles(_dir));
    }
}
