"""Built-in node kinds: AI model, command, file operations, folder analyzer, human input.

::

    from reprise.nodes import AIModelNode, CommandNode, FileOperationNode, FolderAnalyzerNode

Importing this package imports no model SDK: ``openai`` and ``anthropic`` load when an
:class:`AIModelNode` makes its first call.
"""

from reprise.nodes._ai_model import AIModelNode, PromptVariables
from reprise.nodes._command import CommandNode, CommandResult
from reprise.nodes._credentials import Credentials, resolve_credentials
from reprise.nodes._file_ops import (
    CreateFile,
    DeleteFile,
    DiffFile,
    FileChange,
    FileChanges,
    FileOperation,
    FileOperationNode,
    MoveFile,
    PatchFile,
    UpdateFile,
)
from reprise.nodes._folder_analyzer import (
    ExtensionStats,
    FileInfo,
    FolderAnalysis,
    FolderAnalysisOptions,
    FolderAnalyzerNode,
    IgnoreRules,
    SkippedPath,
    analyze_folder,
)
from reprise.nodes._human_input import (
    HumanInputNode,
    InputHandler,
    InputRequest,
    TerminalInputHandler,
    terminal_input_handler,
)
from reprise.nodes._pricing import DEFAULT_PRICES, ModelPrice, PriceTable, register_price
from reprise.nodes._providers import (
    AnthropicMessagesProvider,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    ModelTransientError,
    OpenAIChatProvider,
)

__all__ = [
    "DEFAULT_PRICES",
    "AIModelNode",
    "AnthropicMessagesProvider",
    "CommandNode",
    "CommandResult",
    "CreateFile",
    "Credentials",
    "DeleteFile",
    "ExtensionStats",
    "FileChange",
    "FileChanges",
    "FileOperation",
    "FileInfo",
    "FileOperationNode",
    "FolderAnalysis",
    "FolderAnalysisOptions",
    "FolderAnalyzerNode",
    "HumanInputNode",
    "IgnoreRules",
    "SkippedPath",
    "InputHandler",
    "InputRequest",
    "ModelPrice",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "ModelTransientError",
    "MoveFile",
    "OpenAIChatProvider",
    "PatchFile",
    "DiffFile",
    "PriceTable",
    "PromptVariables",
    "TerminalInputHandler",
    "UpdateFile",
    "analyze_folder",
    "register_price",
    "resolve_credentials",
    "terminal_input_handler",
]
