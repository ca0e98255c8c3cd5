using System.CommandLine;
using Optimum.Core;

namespace Optimum.Cli;

/// <summary>The <c>--device</c> option every command that runs a model takes.</summary>
public static class DeviceOption
{
    public static Option<string> Create() => new("--device")
    {
        Description = "Where ONNX Runtime runs the model: cpu, cuda or cuda:N (a build with -p:OrtNative=cuda and CUDA 13 / cuDNN 9; otherwise an error, never a silent CPU run).",
        DefaultValueFactory = _ => "cpu",
    };

    /// <summary>The device named, checked against this build's ONNX Runtime before any work starts.</summary>
    public static ExecutionDevice Parse(ParseResult r, Option<string> option)
    {
        var device = ExecutionDevice.Parse(r.GetValue(option)!, "--device");
        device.EnsureAvailable();
        return device;
    }
}
