using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>Device names and what <see cref="SessionSettings"/> does with them on a build without CUDA.</summary>
public sealed class ExecutionDeviceTests
{
    [Theory]
    [InlineData("cpu", DeviceKind.Cpu, 0, "cpu")]
    [InlineData(" CPU ", DeviceKind.Cpu, 0, "cpu")]
    [InlineData("cuda", DeviceKind.Cuda, 0, "cuda:0")]
    [InlineData("cuda:0", DeviceKind.Cuda, 0, "cuda:0")]
    [InlineData("Cuda:7", DeviceKind.Cuda, 7, "cuda:7")]
    public void Parse_ReadsCpuCudaAndCudaN_AndRoundTrips(string text, DeviceKind kind, int id, string written)
    {
        var d = ExecutionDevice.Parse(text);
        Assert.Equal((kind, id, written), (d.Kind, d.Id, d.ToString()));
        Assert.Equal(d, ExecutionDevice.Parse(d.ToString()));
    }

    [Theory]
    [InlineData("tpu")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:+1")]
    [InlineData("cuda: 1")]
    [InlineData("cuda:1.0")]
    [InlineData("cuda:99999999999")]
    [InlineData("")]
    public void Parse_RefusesOtherNames_NamingTheSource(string text)
    {
        var e = Assert.Throws<ArgumentException>(() => ExecutionDevice.Parse(text, "Optimum:Device"));
        Assert.Equal($"Optimum:Device '{text}' is not a device: expected cpu, cuda or cuda:N with N a device number >= 0.", e.Message);
    }

    [Fact]
    public void Cuda_RefusesNegativeNumbers() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => ExecutionDevice.Cuda(-1));

    [Fact]
    public void DefaultSettings_AreOnTheCpu() => Assert.Equal(ExecutionDevice.Cpu, new SessionSettings().Device);

    [SkippableFact]
    public void CudaSettings_OnTheCpuPackage_ThrowNamingTheMissingProvider()
    {
        Skip.If(OrtEnv.Instance().GetAvailableProviders().Contains(ExecutionDevice.CudaProvider), "this build of ONNX Runtime has the CUDA provider");
        var settings = new SessionSettings { Device = ExecutionDevice.Cuda(2) };
        var e = Assert.Throws<DeviceUnavailableException>(() => settings.CreateOptions(training: true));
        Assert.StartsWith("cuda:2: the CUDA execution provider is not in this build of ONNX Runtime (providers: CPUExecutionProvider", e.Message);
        Assert.Contains("-p:OrtNative=cuda", e.Message);
        Assert.True(ExpectedErrors.Are(e));             // commands print it in one line
    }
}
